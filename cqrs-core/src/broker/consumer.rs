//! [`Consumer`]: receives the events another service published, once each
//! in effect: it records them as events of this app's log for its
//! processors ([`Consumer::new`]), or hands them to its process managers
//! and event handlers through an inbox ([`Consumer::inbox`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::inbox::{Holder, Inbox};
use super::outcome::Outcome;
use super::recorder::Recorder;
use super::selection;
use super::{BrokerError, Deliveries, Delivery, Received, Subscription};
use crate::app::{BuildError, Cqrs};
use crate::processor::{Claim, Decision, ParkedEvent, Run, Running};
use crate::registry::{Registry, SelectionKind};
use crate::view::ViewError;

/// Receives events from a broker into an app, in one of two ways.
///
/// # Recording into the log ([`Consumer::new`])
///
/// Each message becomes an event of the app's own log, in the producer's
/// stream (aggregate type and id), under the producer's event id, with that
/// id as its command id: a stream records a command id once, so a message
/// delivered twice changes nothing. A batch of messages is one
/// [`EventStore::append_streams`](crate::EventStore::append_streams) of
/// every stream's messages, so one transaction and one commit on the SQL
/// stores; a message is acknowledged after its event is committed. The app's `#[projection]`s, `#[process_manager]`s and
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
///
/// # Reacting through an inbox ([`Consumer::inbox`])
///
/// Each message goes straight to the app's hosted `#[process_manager]`s and
/// `#[event_handler]`s that take its event, and nothing is appended to the
/// app's log: a service that only reacts (sends a mail, calls an API,
/// commands an aggregate of its own) needs no copy of another service's
/// streams. The ids of the messages it handled are recorded in the app's
/// views database, in one transaction per batch under the lease, before
/// the batch is acknowledged; a message delivered again is acknowledged
/// without being handled. A handler runs at least once per message (again
/// if the process dies before that transaction): a process manager's
/// commands carry ids derived from the message, so they take effect once.
/// A handler that fails is retried by the app's
/// [`RetryPolicy`](crate::processor::RetryPolicy); one that still fails
/// parks the message, with its error and its content, and the later
/// messages of its stream wait behind it (parked too) while the other
/// streams go on. [`parked`](Self::parked) lists them and
/// [`decide`](Self::decide) retries or skips one, as for a processor.
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
    /// Set for a consumer that reacts through an inbox.
    inbox: Option<Inbox>,
    /// How it records into the log (unused by an inbox).
    recorder: Recorder,
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
    /// Messages its inbox handed to the app's handlers, which handled them.
    pub handled: u64,
    /// Messages its inbox received that no handler of the app takes.
    pub ignored: u64,
    /// Messages its inbox parked.
    pub parked: u64,
    /// Messages whose event the log, or the inbox, already held.
    pub duplicates: u64,
    /// Messages it moved to the dead letters.
    pub dead_lettered: u64,
    /// The producer's log position of the last event it recorded or handled.
    pub position: u64,
    /// The last failure, cleared by the next batch recorded.
    pub last_error: Option<String>,
}

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
        Self::with(name.into(), app, subscription, None)
    }

    /// A consumer named `name` that hands what `subscription` delivers to
    /// the process managers and event handlers `app` hosts, through an
    /// inbox, without recording it in the log (see the type's docs).
    ///
    /// Refused as [`new`](Self::new) is, and with
    /// [`BuildError::NothingReacts`] when the app hosts no process manager
    /// or event handler.
    pub fn inbox(
        name: impl Into<String>,
        app: &Cqrs,
        subscription: impl Subscription,
    ) -> Result<Self, BuildError> {
        let name = name.into();
        if app.processors().receivers().is_empty() {
            return Err(BuildError::NothingReacts { consumer: name });
        }
        Self::with(name, app, subscription, Some(Inbox::default()))
    }

    fn with(
        name: String,
        app: &Cqrs,
        subscription: impl Subscription,
        inbox: Option<Inbox>,
    ) -> Result<Self, BuildError> {
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
                inbox,
                recorder: Recorder::default(),
            }),
        })
    }

    /// The most messages it records, or hands to its inbox, in one batch
    /// (256 by default). The broker delivers more ahead, unacknowledged, so
    /// the next batch is on its way while one is recorded: up to twice as
    /// many on RabbitMQ (its prefetch count), four times on NATS (its
    /// `max_ack_pending`).
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

    /// The messages its inbox parked, by the place each had among the
    /// messages it received, those already retried or skipped included;
    /// none for a consumer that records into the log (its processors park
    /// events instead).
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ViewError> {
        let backend = self.inner.app.views().backend();
        backend.parked(&self.inner.key).await
    }

    /// Records a decision about the message its inbox parked at `position`:
    /// [`Decision::Retry`] hands the parked messages of its stream to the
    /// handlers again, in order, within about a second while the consumer
    /// runs; [`Decision::Skip`] never handles it, and the messages waiting
    /// behind it are handled next. False if no message is parked there.
    pub async fn decide(&self, position: u64, decision: Decision) -> Result<bool, ViewError> {
        let backend = self.inner.app.views().backend();
        backend.decide(&self.inner.key, position, decision).await
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
            if let Some(inbox) = &self.inbox {
                inbox.decisions(&self.holder(claim)).await?;
            }
            if !batch.is_empty() {
                let span = tracing::info_span!(
                    "consumer.receive",
                    consumer = %self.name,
                    messages = batch.len(),
                    recorded = tracing::field::Empty,
                    handled = tracing::field::Empty,
                    parked = tracing::field::Empty,
                    duplicates = tracing::field::Empty,
                    dead_lettered = tracing::field::Empty,
                );
                self.receive(deliveries, batch, claim)
                    .instrument(span)
                    .await?;
                self.update(|status| status.last_error = None);
            }
        }
        Ok(())
    }

    /// The consumer under `claim`, as its inbox sees it.
    fn holder(&self, claim: Claim) -> Holder<'_> {
        Holder {
            name: &self.name,
            key: &self.key,
            app: &self.app,
            claim,
        }
    }

    /// Records or handles a batch, then acknowledges what was recorded,
    /// handled, parked or held already, and moves what can never be taken
    /// to the dead letters.
    async fn receive(
        &self,
        deliveries: &mut dyn Deliveries,
        batch: Vec<Delivery>,
        claim: Claim,
    ) -> Result<(), String> {
        self.update(|status| status.deliveries += batch.len() as u64);
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        let mut events = Vec::new();
        for (index, delivery) in batch.iter().enumerate() {
            match self.decode(delivery) {
                Ok(event) => events.push((index, event)),
                Err(reason) => outcomes[index] = Some(Outcome::Refused(reason)),
            }
        }
        let positions: HashMap<usize, u64> = events
            .iter()
            .map(|(index, (received, _))| (*index, received.position))
            .collect();
        let settled = match &self.inbox {
            None => self.recorder.record(&self.name, &self.app, events).await,
            Some(inbox) => {
                let messages = events
                    .into_iter()
                    .map(|(index, (received, _))| (index, received))
                    .collect();
                inbox.handle(&self.holder(claim), messages).await?
            }
        };
        for (index, outcome) in settled {
            outcomes[index] = Some(outcome);
        }
        self.acknowledge(deliveries, &batch, outcomes, &positions)
            .await
    }

    /// The event a message carries, with the name its type is stored under,
    /// or why it cannot be taken.
    fn decode(&self, delivery: &Delivery) -> Result<(Received, &'static str), String> {
        let received = delivery
            .decode()
            .map_err(|malformed| malformed.to_string())?;
        match self.names.get(received.event_name.as_str()) {
            Some(&name) => Ok((received, name)),
            None => Err(format!(
                "no event type of this program is stored as `{}`",
                received.event_name
            )),
        }
    }

    /// Acknowledges or dead-letters each message of a batch by its outcome,
    /// and counts them; the first failure fails the batch, whose messages
    /// not acknowledged are delivered again.
    async fn acknowledge(
        &self,
        deliveries: &mut dyn Deliveries,
        batch: &[Delivery],
        outcomes: Vec<Option<Outcome>>,
        positions: &HashMap<usize, u64>,
    ) -> Result<(), String> {
        let broker_error = |error: BrokerError| error.to_string();
        let mut failure = None;
        let mut counts = Counts::default();
        let mut position = 0;
        let mut acknowledged = Vec::with_capacity(batch.len());
        for (index, (delivery, outcome)) in batch.iter().zip(outcomes).enumerate() {
            let count = match &outcome {
                Some(Outcome::Recorded) => &mut counts.recorded,
                Some(Outcome::Handled) => &mut counts.handled,
                Some(Outcome::Ignored) => &mut counts.ignored,
                Some(Outcome::Parked) => &mut counts.parked,
                Some(Outcome::Duplicate) => &mut counts.duplicates,
                Some(Outcome::Refused(reason)) => {
                    counts.dead_lettered += 1;
                    tracing::warn!(consumer = %self.name, tag = delivery.tag, %reason, "message dead-lettered");
                    deliveries
                        .dead_letter(delivery, reason)
                        .await
                        .map_err(broker_error)?;
                    continue;
                }
                Some(Outcome::Failed(error)) => {
                    failure.get_or_insert_with(|| error.clone());
                    continue;
                }
                // Behind a failed event of its stream.
                None => continue,
            };
            *count += 1;
            if matches!(outcome, Some(Outcome::Recorded | Outcome::Handled)) {
                position = position.max(positions.get(&index).copied().unwrap_or(0));
            }
            acknowledged.push(delivery);
        }
        deliveries.ack(&acknowledged).await.map_err(broker_error)?;
        let span = tracing::Span::current();
        span.record("recorded", counts.recorded);
        span.record("handled", counts.handled);
        span.record("parked", counts.parked);
        span.record("duplicates", counts.duplicates);
        span.record("dead_lettered", counts.dead_lettered);
        crate::telemetry::consumer(
            &self.name,
            &[
                ("recorded", counts.recorded),
                ("handled", counts.handled),
                ("ignored", counts.ignored),
                ("parked", counts.parked),
                ("duplicate", counts.duplicates),
                ("dead_lettered", counts.dead_lettered),
            ],
        );
        self.update(|status| {
            status.recorded += counts.recorded;
            status.handled += counts.handled;
            status.ignored += counts.ignored;
            status.parked += counts.parked;
            status.duplicates += counts.duplicates;
            status.dead_lettered += counts.dead_lettered;
            status.position = status.position.max(position);
        });
        match failure {
            Some(error) => Err(format!("receiving a batch failed: {error}")),
            None => Ok(()),
        }
    }
}

/// How many messages of a batch came to each outcome.
#[derive(Default)]
struct Counts {
    recorded: u64,
    handled: u64,
    ignored: u64,
    parked: u64,
    duplicates: u64,
    dead_lettered: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
