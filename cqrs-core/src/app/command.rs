//! The command loop: load, decide, append, apply, retry on a lost race, and
//! keep the aggregate's state in its cache slot however the command ends.

use super::idempotency::{self, Reuse};
use super::replay::ReadError;
use super::{AggregateRuntime, Committed, Cqrs};
use crate::aggregate::{Aggregate, CommandContext, Decision, Event};
use crate::cache::Loaded;
use crate::envelope::{Envelope, Metadata, NewEvent};
use crate::error::CommandError;
use chrono::{DateTime, Utc};

use crate::deadline::DeadlineChange;
use crate::store::{Conflict, DeadlineWrite, StoreError, StreamAppend};

impl Cqrs {
    pub(super) async fn run<A: Aggregate>(
        &self,
        runtime: &AggregateRuntime<A>,
        aggregate_id: &str,
        command: A::Command,
        mut metadata: Metadata,
        reuse: Reuse,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let services = runtime
            .services
            .as_deref()
            .ok_or(CommandError::MissingServices {
                aggregate_type: A::NAME,
            })?;
        idempotency::stamp(&command, &mut metadata, reuse)?;

        let slot = runtime.cache.slot(aggregate_id);
        let mut working = Working {
            slot: slot.lock().await,
            loaded: None,
        };
        // A repeated command is answered from the command index, before
        // (and without) loading the aggregate.
        if let Some(first) = self
            .first_outcome::<A>(aggregate_id, &command, &metadata)
            .await?
        {
            return Ok(first);
        }
        let mut fresh = false;
        let loaded = match working.slot.take() {
            Some(loaded) => loaded,
            None => {
                fresh = true;
                self.load_fresh(aggregate_id).await?
            }
        };
        working.loaded = Some(loaded);
        let mut retries = 0;
        loop {
            // Handlers are pure, so a retry decides again on a copy of the command.
            let attempt = self
                .attempt(
                    runtime,
                    aggregate_id,
                    working.state(),
                    command.clone(),
                    &metadata,
                    services,
                )
                .await;
            // Only an append checks the version. A decision that appended
            // nothing, made on a cached state, may have missed events another
            // process recorded since: catch up, and decide again if there were any.
            if !fresh && unchecked(&attempt) {
                let seen = working.version();
                working.replay(self, aggregate_id).await?;
                fresh = true;
                if working.version() != seen {
                    retries += 1;
                    continue;
                }
            }
            match attempt {
                Ok(Attempt::Nothing) => {
                    let version = working.version();
                    return Ok(Committed::nothing(aggregate_id, version, retries, false));
                }
                // Another instance ran the same command id first: answer
                // what it recorded.
                Ok(Attempt::Duplicate) => {
                    let duplicate = (&command, &metadata, retries);
                    return self.first_run(&mut working, aggregate_id, duplicate).await;
                }
                Ok(Attempt::Decided(envelopes)) => {
                    return Ok(self.commit(working, aggregate_id, envelopes, retries).await);
                }
                Ok(Attempt::Conflict(conflict)) => {
                    runtime.metrics.conflict();
                    working.replay(self, aggregate_id).await?;
                    fresh = true;
                    if retries == self.inner.max_retries {
                        return Err(CommandError::Conflict {
                            conflict,
                            attempts: retries + 1,
                        });
                    }
                    retries += 1;
                }
                // A failed append (even one whose outcome is unknown) leaves
                // the state as it was: right at its version. If the append
                // landed after all, the next one conflicts and catches up.
                Err(error) => return Err(error),
            }
        }
    }

    /// The outcome of the first run of a command another instance ran
    /// first, after `retries`: read from the command index once the state
    /// caught up.
    async fn first_run<A: Aggregate>(
        &self,
        working: &mut Working<'_, A>,
        aggregate_id: &str,
        (command, metadata, retries): (&A::Command, &Metadata, u32),
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        working.replay(self, aggregate_id).await?;
        let first = self
            .first_outcome::<A>(aggregate_id, command, metadata)
            .await?;
        let version = working.version();
        Ok(first.map_or_else(
            || Committed::nothing(aggregate_id, version, retries, true),
            |first| Committed { retries, ..first },
        ))
    }

    /// After an append: applies its events to the state in the slot (taking
    /// a snapshot when one is due), releases the slot, wakes the processors
    /// and delivers the events to the inline handlers.
    pub(super) async fn commit<A: Aggregate>(
        &self,
        mut working: Working<'_, A>,
        aggregate_id: &str,
        envelopes: Vec<Envelope<A::Event>>,
        retries: u32,
    ) -> Committed<A::Event> {
        let Some(loaded) = working.loaded.as_mut() else {
            unreachable!("the state is loaded before it is used")
        };
        let previous = loaded.version;
        for envelope in &envelopes {
            loaded.state.apply(&envelope.payload);
        }
        loaded.version += envelopes.len() as u64;
        let version = loaded.version;
        if A::SNAPSHOT_EVERY > 0 && previous / A::SNAPSHOT_EVERY != version / A::SNAPSHOT_EVERY {
            self.take_snapshot(aggregate_id, working.state()).await;
        }
        // Released before delivery, so a handler may send a command to this
        // same aggregate.
        drop(working);
        self.inner.appended.notify(usize::MAX);
        let handler_failures = self.inner.handlers.deliver(&envelopes).await;
        Committed {
            aggregate_id: aggregate_id.to_owned(),
            version,
            events: envelopes,
            retries,
            handler_failures,
            duplicate: false,
        }
    }

    /// Decides on `command` against `loaded` and appends the events at
    /// `loaded.version`.
    async fn attempt<A: Aggregate>(
        &self,
        runtime: &AggregateRuntime<A>,
        aggregate_id: &str,
        loaded: &Loaded<A>,
        command: A::Command,
        metadata: &Metadata,
        services: &A::Services,
    ) -> Result<Attempt<A::Event>, CommandError<A::Error>> {
        let context = CommandContext {
            aggregate_id,
            version: loaded.version,
            metadata,
            clock: &*self.inner.clock,
        };
        let decision = loaded.state.handle(command, &context, services).await?;
        self.append_decision(
            runtime,
            (aggregate_id, loaded.version),
            decision,
            metadata,
            None,
        )
        .await
    }

    /// Appends a decision's events and deadline changes to the stream
    /// `aggregate_id` at `version`, as one batch; for a fire, with the
    /// deadline it consumes first.
    pub(super) async fn append_decision<A: Aggregate>(
        &self,
        runtime: &AggregateRuntime<A>,
        (aggregate_id, version): (&str, u64),
        decision: Decision<A::Event>,
        metadata: &Metadata,
        consumed: Option<DeadlineWrite>,
    ) -> Result<Attempt<A::Event>, CommandError<A::Error>> {
        let Decision { events, deadlines } = decision;
        if events.is_empty() && deadlines.is_empty() && consumed.is_none() {
            return Ok(Attempt::Nothing);
        }
        let now = self.inner.clock.now();
        let deadlines = consumed
            .into_iter()
            .map(Ok)
            .chain(
                deadlines
                    .into_iter()
                    .map(|change| deadline_write(change, now, metadata)),
            )
            .collect::<Result<Vec<_>, CommandError<A::Error>>>()?;
        let new_events = events
            .iter()
            .map(|event| new_event(event, metadata))
            .collect::<Result<Vec<_>, CommandError<A::Error>>>()?;
        // Enough to recognize the batch in the stream: batches are atomic.
        let batch = new_events
            .first()
            .map(|event| (event.event_id, new_events.len()));
        let started = runtime.metrics.append_started();
        let appended = if deadlines.is_empty() {
            self.inner
                .store
                .append(A::NAME, aggregate_id, version, new_events)
                .await
        } else {
            let append = StreamAppend::new(A::NAME, aggregate_id, version, new_events)
                .with_deadlines(deadlines);
            self.inner.store.append_decision(append).await
        };
        runtime
            .metrics
            .appended(started, appended.as_ref().map_or(0, |events| events.len()));
        let appended = match appended {
            Err(StoreError::OutcomeUnknown {
                aggregate_type,
                aggregate_id,
                source,
            }) => self
                .resolve::<A>(&aggregate_id, version, batch)
                .await
                .ok_or(StoreError::OutcomeUnknown {
                    aggregate_type,
                    aggregate_id,
                    source,
                }),
            appended => appended,
        };
        match appended {
            Ok(stored) => Ok(Attempt::Decided(
                stored
                    .into_iter()
                    .zip(events)
                    .map(|(envelope, event)| envelope.with_payload(event))
                    .collect(),
            )),
            Err(StoreError::Conflict(conflict)) => Ok(Attempt::Conflict(conflict)),
            Err(StoreError::DuplicateCommand { .. }) => Ok(Attempt::Duplicate),
            Err(error) => Err(CommandError::Store(error)),
        }
    }

    /// After an append whose outcome is unknown: its events as the store
    /// holds them if the batch landed right after `version`; `None` when the
    /// store cannot be read or does not hold them (yet: a commit still in
    /// flight may land later, so the outcome stays unknown).
    async fn resolve<A: Aggregate>(
        &self,
        aggregate_id: &str,
        version: u64,
        batch: Option<(uuid::Uuid, usize)>,
    ) -> Option<Vec<Envelope>> {
        let (first_event, count) = batch?;
        let stored = self
            .inner
            .store
            .load(A::NAME, aggregate_id, version + 1)
            .await
            .ok()?;
        let landed = stored.len() >= count && stored[0].event_id == first_event;
        landed.then(|| stored.into_iter().take(count).collect())
    }
}

/// The aggregate a command works on, in its locked cache slot.
///
/// However the command ends (it returns, fails, or its future is dropped at
/// an await, as under a request timeout) the state goes back to the slot:
/// at every await it matches its version, and a stale version is what every
/// append checks, so the next command catches up instead of reloading the
/// stream. Only a panic, which may leave the state half-applied, leaves the
/// slot empty, so the next command reloads.
pub(super) struct Working<'a, A> {
    slot: async_lock::MutexGuard<'a, Option<Loaded<A>>>,
    /// `None` only until the state is loaded.
    loaded: Option<Loaded<A>>,
}

impl<'a, A: Aggregate> Working<'a, A> {
    /// The aggregate in its locked slot: the cached state, if the slot
    /// holds one, else loaded; with whether it was loaded just now.
    pub(super) async fn lock(
        app: &Cqrs,
        slot: &'a async_lock::Mutex<Option<Loaded<A>>>,
        aggregate_id: &str,
    ) -> Result<(Self, bool), ReadError> {
        let mut working = Working {
            slot: slot.lock().await,
            loaded: None,
        };
        let fresh = working.slot.is_none();
        let loaded = match working.slot.take() {
            Some(loaded) => loaded,
            None => app.load_fresh(aggregate_id).await?,
        };
        working.loaded = Some(loaded);
        Ok((working, fresh))
    }

    pub(super) fn state(&self) -> &Loaded<A> {
        self.loaded
            .as_ref()
            .unwrap_or_else(|| unreachable!("the state is loaded before it is used"))
    }

    fn version(&self) -> u64 {
        self.state().version
    }

    /// Applies the events recorded after the state's version.
    pub(super) async fn replay(
        &mut self,
        dispatcher: &Cqrs,
        aggregate_id: &str,
    ) -> Result<(), ReadError> {
        let loaded = self.loaded.get_or_insert_with(Loaded::initial);
        dispatcher.catch_up(aggregate_id, loaded).await
    }
}

impl<A> Drop for Working<'_, A> {
    fn drop(&mut self) {
        if !std::thread::panicking()
            && let Some(loaded) = self.loaded.take()
        {
            *self.slot = Some(loaded);
        }
    }
}

/// A decision's deadline change as its append writes it: due by the app's
/// clock at `now`, with the decision's metadata. An aggregate's deadlines
/// belong to it: one that names an instance is refused.
fn deadline_write<E>(
    change: DeadlineChange,
    now: DateTime<Utc>,
    metadata: &Metadata,
) -> Result<DeadlineWrite, CommandError<E>> {
    let name = change.name();
    if change.instance().is_some() {
        return Err(CommandError::DeadlineInstance { name });
    }
    change
        .into_write(now, crate::id::new_id(), metadata)
        .map_err(|source| CommandError::EncodeDeadline { name, source })
}

/// Whether an attempt's outcome was decided without an append checking the
/// version: no events, or a rejection by the aggregate.
fn unchecked<E, Err>(attempt: &Result<Attempt<E>, CommandError<Err>>) -> bool {
    match attempt {
        Ok(Attempt::Nothing) => true,
        Ok(Attempt::Decided(_)) => false,
        Err(error) => matches!(
            error,
            CommandError::Domain(_) | CommandError::NotFound { .. }
        ),
        Ok(Attempt::Conflict(_) | Attempt::Duplicate) => false,
    }
}

/// What one attempt at a command came to.
pub(super) enum Attempt<E> {
    /// The decision was recorded: its events (perhaps none, for a decision
    /// that only changed deadlines).
    Decided(Vec<Envelope<E>>),
    /// The decision records nothing.
    Nothing,
    /// Another writer appended first.
    Conflict(Conflict),
    /// The stream already holds the command's id.
    Duplicate,
}

/// A decided event as the store takes it: encoded, with the command's
/// metadata, a new id and its tags.
pub(super) fn new_event<E: Event, Err>(
    event: &E,
    metadata: &Metadata,
) -> Result<NewEvent, CommandError<Err>> {
    let event_type = event.event_type();
    let payload = event.encode().map_err(|source| CommandError::Encode {
        event_name: event_type.name,
        source,
    })?;
    Ok(NewEvent {
        event_id: crate::id::new_id(),
        event_name: event_type.name,
        event_version: event_type.version,
        metadata: metadata.clone(),
        payload,
        tags: event.tags()?,
    })
}
