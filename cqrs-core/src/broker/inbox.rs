//! The inbox: a consumer that reacts hands each message straight to the
//! app's process managers and event handlers, with no log of its own in
//! between, and records the message's id in the app's views database in
//! the transaction that ends the batch, under the consumer's lease. A
//! message delivered again finds its id there and is not handled again.
//!
//! A handler that fails is retried by the app's
//! [`RetryPolicy`](crate::processor::RetryPolicy), then the message is
//! parked with its error and its content (no log holds it), and the later
//! messages of its stream wait behind it, parked too, as a processor's
//! events do. An operator retries or skips it through
//! [`Consumer::decide`](super::Consumer::decide).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use super::message::by_stream;
use super::outcome::Outcome;
use super::{Outgoing, Received};
use crate::app::Cqrs;
use crate::future::{BoxFuture, JoinAll};
use crate::processor::{Claim, FailureCause};
use crate::view::{ParkState, ParkedEvent, Settled, ViewError};

/// How often the inbox looks for parked messages an operator decided on.
const DECISIONS: Duration = Duration::from_secs(1);

/// The state of one consumer's inbox in this process.
#[derive(Default)]
pub(super) struct Inbox {
    /// The streams with a parked message, whose later messages wait.
    blocked: Mutex<HashSet<(String, String)>>,
    /// When the parked messages were last read.
    checked: Mutex<Option<Instant>>,
}

/// The consumer an inbox works for, under its current claim.
pub(super) struct Holder<'a> {
    pub(super) name: &'a str,
    /// Its lease's key, which keys its inbox and its parked messages.
    pub(super) key: &'a str,
    pub(super) app: &'a Cqrs,
    pub(super) claim: Claim,
}

/// How the handlers took one message.
enum Handling {
    /// Every handler that takes it returned `Ok`.
    Handled,
    /// No handler takes events of its name.
    Ignored,
    /// A handler still failed after the retries.
    Failed(Failure),
    /// The database or a broker a handler needs is unavailable.
    Outage(String),
}

/// Why a message was parked after its retries.
struct Failure {
    /// The first failing handler's error.
    error: String,
    attempts: u32,
    /// The handlers that took it, which a retry does not run again.
    handled: Vec<String>,
}

/// One message of the batch that its handlers took or parked.
struct Taken {
    index: usize,
    received: Received,
    fate: Fate,
}

/// What became of a message the inbox records.
enum Fate {
    Handled,
    /// Parked after its handlers kept failing.
    Failed(Failure),
    /// Parked behind an earlier message of its stream, never tried.
    Waiting,
}

impl Inbox {
    /// Handles a batch: duplicates are acknowledged, each stream's new
    /// messages handled in order, the streams side by side; then the
    /// handled and parked ids, and the parked messages, are committed in
    /// one transaction under the claim.
    pub(super) async fn handle(
        &self,
        holder: &Holder<'_>,
        messages: Vec<(usize, Received)>,
    ) -> Result<Vec<(usize, Outcome)>, String> {
        let backend = holder.app.views().backend();
        let ids: Vec<Uuid> = messages
            .iter()
            .map(|(_, received)| received.event_id)
            .collect();
        let mut known: HashSet<Uuid> = backend
            .received(holder.key, &ids)
            .await
            .map_err(|error| error.to_string())?
            .into_iter()
            .collect();
        // Handled before, or earlier in this batch.
        let (new, duplicates): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|(_, received)| known.insert(received.event_id));
        let mut outcomes: Vec<(usize, Outcome)> = duplicates
            .into_iter()
            .map(|(index, _)| (index, Outcome::Duplicate))
            .collect();
        let streams = by_stream(new, |(_, received)| received);
        let taken = Mutex::new(Vec::new());
        let failed = Mutex::new(Vec::new());
        let handling: Vec<BoxFuture<'_, ()>> = streams
            .into_iter()
            .map(|stream| -> BoxFuture<'_, ()> {
                let (taken, failed) = (&taken, &failed);
                Box::pin(async move {
                    let mut waiting = self.is_blocked(&stream[0].1);
                    for (index, received) in stream {
                        if waiting {
                            lock(taken).push(Taken::new(index, received, Fate::Waiting));
                            continue;
                        }
                        match self.attempt(holder, &received, &[]).await {
                            Handling::Handled => {
                                lock(taken).push(Taken::new(index, received, Fate::Handled));
                            }
                            Handling::Ignored => lock(failed).push((index, Outcome::Ignored)),
                            Handling::Failed(failure) => {
                                waiting = true;
                                lock(taken).push(Taken::new(
                                    index,
                                    received,
                                    Fate::Failed(failure),
                                ));
                            }
                            // The rest of the stream waits for the redelivery.
                            Handling::Outage(error) => {
                                lock(failed).push((index, Outcome::Failed(error)));
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        JoinAll(handling).await;
        outcomes.extend(failed.into_inner().unwrap_or_else(PoisonError::into_inner));
        let taken = taken.into_inner().unwrap_or_else(PoisonError::into_inner);
        self.commit(holder, &taken)
            .await
            .map_err(|error| format!("the inbox could not record a batch: {error}"))?;
        for message in taken {
            let outcome = match message.fate {
                Fate::Handled => Outcome::Handled,
                Fate::Failed(_) | Fate::Waiting => Outcome::Parked,
            };
            outcomes.push((message.index, outcome));
        }
        Ok(outcomes)
    }

    /// Records the handled and parked messages' ids and the parked
    /// messages, each at the next place of the consumer's count.
    async fn commit(&self, holder: &Holder<'_>, taken: &[Taken]) -> Result<(), ViewError> {
        if taken.is_empty() {
            return Ok(());
        }
        let backend = holder.app.views().backend();
        let mut transaction = backend.begin(holder.key, holder.claim).await?;
        let count = transaction.checkpoint();
        let mut parked = Vec::new();
        for (place, message) in (count + 1..).zip(taken) {
            if !matches!(message.fate, Fate::Handled) {
                parked.push(park(holder, place, message));
            }
        }
        let streams: Vec<(String, String)> = parked.iter().map(ParkedEvent::stream).collect();
        transaction
            .receive(
                taken
                    .iter()
                    .map(|message| message.received.event_id)
                    .collect(),
            )
            .await?;
        if !parked.is_empty() {
            transaction.park(parked).await?;
        }
        transaction.commit(count + taken.len() as u64).await?;
        for stream in streams {
            tracing::warn!(consumer = holder.name, aggregate_type = %stream.0, aggregate_id = %stream.1, "message parked");
            lock(&self.blocked).insert(stream);
        }
        Ok(())
    }

    fn is_blocked(&self, received: &Received) -> bool {
        let stream = (
            received.aggregate_type.clone(),
            received.aggregate_id.clone(),
        );
        lock(&self.blocked).contains(&stream)
    }

    /// Hands a message to every handler that takes it but those in
    /// `handled`, retrying those that fail as the app's retry policy says.
    async fn attempt(
        &self,
        holder: &Holder<'_>,
        received: &Received,
        handled: &[String],
    ) -> Handling {
        let span = tracing::info_span!(
            "consumer.handle",
            consumer = holder.name,
            event_id = %received.event_id,
            event = %received.event_name,
        );
        if let Some(traceparent) = received.trace.get(super::TRACEPARENT) {
            crate::telemetry::continue_trace(
                &span,
                traceparent,
                received.trace.get(super::TRACESTATE).map(String::as_str),
            );
        }
        self.attempts(holder, received, handled)
            .instrument(span)
            .await
    }

    async fn attempts(
        &self,
        holder: &Holder<'_>,
        received: &Received,
        handled: &[String],
    ) -> Handling {
        let envelope = received.envelope();
        let processors = holder.app.processors();
        let policy = processors.retry_policy();
        let mut pending = processors.receivers();
        pending.retain(|name| !handled.iter().any(|done| done == name));
        let mut done: Vec<String> = handled.to_vec();
        let mut taken = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut failing = Vec::new();
            let mut error = None;
            for name in pending {
                match processors.receive(name, &envelope).await {
                    None => {}
                    Some(Ok(())) => {
                        taken = true;
                        done.push(name.to_owned());
                    }
                    Some(Err(failure)) => {
                        taken = true;
                        if failure.cause() != FailureCause::Event {
                            return Handling::Outage(failure.to_string());
                        }
                        tracing::debug!(consumer = holder.name, handler = name, error = %failure, attempts, "handler failed");
                        error.get_or_insert_with(|| format!("{name}: {failure}"));
                        failing.push(name);
                    }
                }
            }
            match error {
                None if taken => return Handling::Handled,
                None => return Handling::Ignored,
                Some(error) if attempts >= policy.max_attempts => {
                    return Handling::Failed(Failure {
                        error,
                        attempts,
                        handled: done,
                    });
                }
                // Only the handlers that failed are tried again.
                Some(_) => {
                    pending = failing;
                    futures_timer::Delay::new(policy.delay(attempts, policy.max_delay)).await;
                }
            }
        }
    }

    /// At most every second: handles again the parked messages an operator
    /// asked to retry (and those that waited behind one skipped), and
    /// learns which streams still wait.
    pub(super) async fn decisions(&self, holder: &Holder<'_>) -> Result<(), String> {
        {
            let mut checked = lock(&self.checked);
            if checked.is_some_and(|checked| checked.elapsed() < DECISIONS) {
                return Ok(());
            }
            *checked = Some(Instant::now());
        }
        let backend = holder.app.views().backend();
        let view_error = |error: ViewError| error.to_string();
        let parked = backend.parked(holder.key).await.map_err(view_error)?;
        let failing = |stream: &(String, String)| {
            parked.iter().any(|event| {
                &event.stream() == stream
                    && event.state == ParkState::Parked
                    && event.error.is_some()
            })
        };
        let due: Vec<&ParkedEvent> = parked
            .iter()
            .filter(|event| {
                event.state == ParkState::Retrying
                    || (event.state == ParkState::Parked
                        && event.error.is_none()
                        && !failing(&event.stream()))
            })
            .collect();
        let mut failed_streams: HashSet<(String, String)> = HashSet::new();
        for event in due {
            let outcome = if failed_streams.contains(&event.stream()) {
                Settled::Waiting
            } else {
                match event.message.as_deref().map(restored) {
                    None => Settled::Failed("the parked message was not kept".to_owned()),
                    Some(Err(error)) => Settled::Failed(error),
                    Some(Ok((received, handled))) => {
                        match self.attempt(holder, &received, &handled).await {
                            Handling::Handled | Handling::Ignored => Settled::Handled,
                            Handling::Failed(failure) => Settled::Failed(failure.error),
                            Handling::Outage(error) => return Err(error),
                        }
                    }
                }
            };
            if !matches!(outcome, Settled::Handled) {
                failed_streams.insert(event.stream());
            }
            let mut transaction = backend
                .begin(holder.key, holder.claim)
                .await
                .map_err(view_error)?;
            let count = transaction.checkpoint();
            transaction
                .settle(event.position, outcome)
                .await
                .map_err(view_error)?;
            transaction.commit(count).await.map_err(view_error)?;
        }
        let blocked = backend
            .parked(holder.key)
            .await
            .map_err(view_error)?
            .iter()
            .filter(|event| event.is_blocking())
            .map(ParkedEvent::stream)
            .collect();
        *lock(&self.blocked) = blocked;
        Ok(())
    }
}

impl Taken {
    fn new(index: usize, received: Received, fate: Fate) -> Self {
        Self {
            index,
            received,
            fate,
        }
    }
}

/// A parked message as its row keeps it, at `place` among the consumer's
/// messages.
fn park(holder: &Holder<'_>, place: u64, message: &Taken) -> ParkedEvent {
    let envelope = message.received.envelope();
    let (error, attempts, handled) = match &message.fate {
        Fate::Failed(failure) => (
            Some(failure.error.clone()),
            failure.attempts,
            &failure.handled[..],
        ),
        Fate::Handled | Fate::Waiting => (None, 0, &[][..]),
    };
    let mut event = ParkedEvent::of(holder.key, 0, &envelope, error, attempts);
    event.position = place;
    event.message = Some(stored(&message.received, handled));
    event
}

/// A message as a parked row keeps it: its attributes and its body, as the
/// wire carried them, and the handlers that already took it.
fn stored(received: &Received, handled: &[String]) -> String {
    let envelope = received.envelope();
    let attributes: BTreeMap<&str, String> =
        Outgoing::new(&envelope).attributes().into_iter().collect();
    serde_json::json!({
        "attributes": attributes,
        "body": received.payload.as_str(),
        "handled": handled,
    })
    .to_string()
}

/// The message a parked row kept, and the handlers that took it.
fn restored(json: &str) -> Result<(Received, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        attributes: HashMap<String, String>,
        body: String,
        #[serde(default)]
        handled: Vec<String>,
    }
    let stored: Stored = serde_json::from_str(json)
        .map_err(|error| format!("the parked message cannot be read: {error}"))?;
    let received = Received::decode(
        |name| stored.attributes.get(name).map(String::as_str),
        stored.body.as_bytes(),
    )
    .map_err(|error| format!("the parked message cannot be read: {error}"))?;
    Ok((received, stored.handled))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_message_is_restored_as_it_was_received() {
        let attributes: HashMap<&str, &str> = [
            ("id", "0190a6c4-5b1e-7c3a-9d2f-1e2d3c4b5a69"),
            ("source", "Order"),
            ("subject", "order-1"),
            ("type", "OrderPlaced"),
            ("time", "2026-12-07T08:00:00+00:00"),
            ("sequence", "1"),
            ("position", "7"),
            ("eventversion", "2"),
            ("correlationid", "0190a6c4-5b1e-7c3a-9d2f-1e2d3c4b5a70"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]
        .into_iter()
        .collect();
        let received = Received::decode(
            |name| attributes.get(name).copied(),
            br#"{"item":"teapot","quantity":2}"#,
        )
        .expect("a valid message");
        let handled = vec!["notifier.order_placed".to_owned()];
        assert_eq!(
            restored(&stored(&received, &handled)),
            Ok((received, handled))
        );
        assert!(restored("{}").is_err());
    }
}
