//! [`Cqrs`]: runs commands against aggregates and records their events.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::aggregate::{Aggregate, CommandContext, Event, EventPayload, IntoCommand};
use crate::cache::{Cache, Loaded};
use crate::envelope::{Envelope, Metadata, NewEvent};
use crate::error::{CommandError, DecodeError, HandlerFailure, LoadError, RegistryError};
use crate::handler::{EventHandlers, HandlerOutcome};
use crate::processor::{
    ProcessManager, ProcessManagerRunner, Processor, Processors, ProjectionRunner, RetryPolicy,
    Settings, WaitError,
};
use crate::registry::{EventHandlerRegistration, ProcessorRegistration, Registry};
use crate::store::{Conflict, DynEventStore, EventStore, Snapshot, StoreError};
use crate::view::{Projection, ReadModels};

/// Errors of `execute` for the aggregate that handles command `C`.
type ErrorOf<C> = CommandError<<<C as IntoCommand>::Aggregate as Aggregate>::Error>;

/// Events of the aggregate that handles command `C`.
type EventOf<C> = <<C as IntoCommand>::Aggregate as Aggregate>::Event;

/// The application: hosts any number of aggregate types over one event store.
///
/// Cloning is cheap and every clone shares the store, the cache and the handlers.
///
/// # Examples
///
/// ```
/// # use cqrs_core::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Increment;
/// # #[derive(Debug, Clone, Command)]
/// # pub enum CounterCommand { Increment(Increment) }
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Incremented;
/// # #[derive(Debug, Clone, Event)]
/// # pub enum CounterEvent { Incremented(Incremented) }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("never")]
/// # pub struct Never;
/// #[derive(Debug, Default, Aggregate)]
/// #[aggregate(name = "counter", command = CounterCommand, event = CounterEvent, error = Never)]
/// pub struct Counter { count: u64 }
///
/// #[aggregate_impl]
/// impl Counter {
///     #[command_handler(create)]
///     fn increment(&self, _: Increment) -> Result<Incremented, Never> {
///         Ok(Incremented)
///     }
///
///     #[apply]
///     fn incremented(&mut self, _: &Incremented) {
///         self.count += 1;
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let app = Cqrs::new(MemoryStore::new())?;
/// let done = app.execute("c-1", Increment).await?;
/// assert_eq!(done.version, 1);
/// let counter: Counter = app.load("c-1").await?;
/// assert_eq!(counter.count, 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Cqrs<S> {
    dispatcher: Dispatcher,
    store: Arc<S>,
}

/// Sends commands, without naming the event store's type: what event
/// handlers and process managers hold. Cheap to clone; every clone shares the
/// app it came from.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn DynEventStore>,
    processors: Processors,
    /// Woken after every append this app makes, for the event processors.
    appended: Arc<event_listener::Event>,
    handlers: EventHandlers,
    services: foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    runtimes: RwLock<foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    max_retries: u32,
    cache_capacity: usize,
}

/// What one aggregate type needs at run time, created on its first command.
struct AggregateRuntime<A: Aggregate> {
    cache: Cache<A>,
    services: Option<Arc<A::Services>>,
}

/// The outcome of a command that succeeded.
#[derive(Debug)]
pub struct Committed<E> {
    /// The aggregate the command targeted.
    pub aggregate_id: String,
    /// The aggregate's version after the command.
    pub version: u64,
    /// The recorded events, in order; empty if the command decided on none.
    pub events: Vec<Envelope<E>>,
    /// How many times the command was decided again after another writer won
    /// the race to append.
    pub retries: u32,
    /// The event handlers that failed on these events. The events stay recorded.
    pub handler_failures: Vec<HandlerFailure>,
    /// The command's [`Metadata::command_id`] was already recorded on this
    /// aggregate, so it was not run again and `events` is empty.
    pub duplicate: bool,
}

impl<E> Committed<E> {
    /// The global position of the last event recorded, if any: what a reader
    /// must reach to see this command's effects.
    pub fn last_position(&self) -> Option<u64> {
        self.events.last().map(|envelope| envelope.position)
    }

    fn nothing(aggregate_id: &str, version: u64, retries: u32, duplicate: bool) -> Self {
        Committed {
            aggregate_id: aggregate_id.to_owned(),
            version,
            events: Vec::new(),
            retries,
            handler_failures: Vec::new(),
            duplicate,
        }
    }
}

impl<S> Clone for Cqrs<S> {
    fn clone(&self) -> Self {
        Self {
            dispatcher: self.dispatcher.clone(),
            store: Arc::clone(&self.store),
        }
    }
}

impl<S> fmt::Debug for Cqrs<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cqrs")
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("handlers", &self.inner.handlers)
            .field("max_retries", &self.inner.max_retries)
            .field("cache_capacity", &self.inner.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore> Cqrs<S> {
    /// An app over `store` with every registered `#[event_handler]`, after
    /// checking the registry for duplicate names.
    pub fn new(store: S) -> Result<Self, RegistryError> {
        Self::builder(store).build()
    }

    /// An app with chosen handlers, services and limits.
    pub fn builder(store: S) -> CqrsBuilder<S> {
        CqrsBuilder {
            store,
            filter: Box::new(|_| true),
            extra_handlers: EventHandlers::default(),
            read_models: None,
            processors: Vec::new(),
            processor_settings: Settings::default(),
            services: foldhash::HashMap::default(),
            max_retries: 10,
            cache_capacity: 65_536,
        }
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A handle that sends commands through this app, for code that should
    /// not depend on the store's type.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Runs a command on the aggregate `aggregate_id`, inferred from the
    /// command's type; see [`Dispatcher::execute`].
    pub async fn execute<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        self.dispatcher.execute(aggregate_id, command).await
    }

    /// [`execute`](Self::execute) with metadata to record on every event.
    pub async fn execute_with<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
        metadata: Metadata,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        self.dispatcher
            .execute_with(aggregate_id, command, metadata)
            .await
    }

    /// The current state of an aggregate, replayed from the store.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<A, LoadError> {
        self.dispatcher.load(aggregate_id).await
    }

    /// [`execute`](Self::execute), then waits until the named processors
    /// (projections, process managers) have processed the command's events:
    /// read your own writes. Needs [`Processors::run`] going.
    pub async fn execute_and_wait<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
        processors: &[&str],
    ) -> Result<Committed<EventOf<C>>, ExecuteAndWaitError<<C::Aggregate as Aggregate>::Error>>
    {
        let done = self
            .execute(aggregate_id, command)
            .await
            .map_err(ExecuteAndWaitError::Command)?;
        if let Some(position) = done.last_position() {
            self.processors()
                .wait_for(position, processors)
                .await
                .map_err(ExecuteAndWaitError::Wait)?;
        }
        Ok(done)
    }

    /// The app's projections and process managers.
    pub fn processors(&self) -> &Processors {
        self.dispatcher.processors()
    }
}

/// Why [`Cqrs::execute_and_wait`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteAndWaitError<E> {
    /// The command failed; nothing was recorded.
    #[error(transparent)]
    Command(CommandError<E>),
    /// The command's events are recorded, but a processor stopped first.
    #[error(transparent)]
    Wait(WaitError),
}

impl Dispatcher {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    pub(crate) fn processors_ref(&self) -> &Processors {
        &self.inner.processors
    }

    /// Runs a command on the aggregate `aggregate_id`, inferred from the command's type.
    ///
    /// Loads the aggregate (from the cache when it is hot), lets the handler
    /// decide, appends the events at the version the decision saw, applies them
    /// and delivers them to the event handlers. When another writer appended
    /// first, it catches up and decides again, up to the configured retries.
    ///
    /// Commands this app sends to one aggregate run one at a time. Event
    /// handlers run after the aggregate is released, in the order of the
    /// command's events, so they may send commands of their own, to any
    /// aggregate; handlers of two concurrent commands may interleave.
    pub async fn execute<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        self.execute_with(aggregate_id, command, Metadata::default())
            .await
    }

    /// [`execute`](Self::execute) with metadata to record on every event.
    pub async fn execute_with<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
        mut metadata: Metadata,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(crate::id::new_id());
        }
        self.run::<C::Aggregate>(aggregate_id, command.into_command(), metadata)
            .await
    }

    /// The current state of an aggregate, replayed from the store.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<A, LoadError> {
        let loaded = self
            .load_fresh::<A>(aggregate_id)
            .await
            .map_err(LoadError::from)?;
        if loaded.version == 0 {
            return Err(LoadError::NotFound {
                aggregate_type: A::NAME,
                aggregate_id: aggregate_id.to_owned(),
            });
        }
        Ok(loaded.state)
    }

    async fn run<A: Aggregate>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let runtime = self.runtime::<A>();
        let services = runtime
            .services
            .as_deref()
            .ok_or(CommandError::MissingServices {
                aggregate_type: A::NAME,
            })?;

        let slot = runtime.cache.slot(aggregate_id);
        let mut working = Working {
            slot: slot.lock().await,
            loaded: None,
        };
        let mut fresh = false;
        let loaded = match working.slot.take() {
            Some(loaded) => loaded,
            None => {
                fresh = true;
                self.load_fresh(aggregate_id).await?
            }
        };
        working.loaded = Some(loaded);
        if let Some(command_id) = metadata.command_id {
            let recorded = self
                .inner
                .store
                .has_command(A::NAME, aggregate_id, command_id)
                .await
                .map_err(CommandError::Store)?;
            if recorded {
                if !fresh {
                    working.replay(self, aggregate_id).await?;
                }
                let version = working.version();
                return Ok(Committed::nothing(aggregate_id, version, 0, true));
            }
        }
        let mut retries = 0;
        loop {
            // Handlers are pure, so a retry decides again on a copy of the command.
            let attempt = self
                .attempt(
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
            let unchecked = match &attempt {
                Ok(Attempt::Decided(events)) => events.is_empty(),
                Err(error) => matches!(
                    error,
                    CommandError::Domain(_) | CommandError::NotFound { .. }
                ),
                Ok(Attempt::Conflict(_) | Attempt::Duplicate) => false,
            };
            if unchecked && !fresh {
                let seen = working.version();
                working.replay(self, aggregate_id).await?;
                fresh = true;
                if working.version() != seen {
                    retries += 1;
                    continue;
                }
            }
            match attempt {
                Ok(Attempt::Decided(events)) if events.is_empty() => {
                    let version = working.version();
                    return Ok(Committed::nothing(aggregate_id, version, retries, false));
                }
                // Another instance ran the same command id first.
                Ok(Attempt::Duplicate) => {
                    working.replay(self, aggregate_id).await?;
                    let version = working.version();
                    return Ok(Committed::nothing(aggregate_id, version, retries, true));
                }
                Ok(Attempt::Decided(envelopes)) => {
                    let Some(loaded) = working.loaded.as_mut() else {
                        unreachable!("the state is loaded before it is used")
                    };
                    let previous = loaded.version;
                    for envelope in &envelopes {
                        loaded.state.apply(&envelope.payload);
                    }
                    loaded.version += envelopes.len() as u64;
                    let version = loaded.version;
                    if A::SNAPSHOT_EVERY > 0
                        && previous / A::SNAPSHOT_EVERY != version / A::SNAPSHOT_EVERY
                    {
                        self.take_snapshot(aggregate_id, working.state()).await;
                    }
                    // Released before delivery, so a handler may send a
                    // command to this same aggregate.
                    drop(working);
                    self.inner.appended.notify(usize::MAX);
                    let handler_failures = self.inner.handlers.deliver(&envelopes).await;
                    return Ok(Committed {
                        aggregate_id: aggregate_id.to_owned(),
                        version,
                        events: envelopes,
                        retries,
                        handler_failures,
                        duplicate: false,
                    });
                }
                Ok(Attempt::Conflict(conflict)) => {
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

    /// Decides on `command` against `loaded` and appends the events at
    /// `loaded.version`.
    async fn attempt<A: Aggregate>(
        &self,
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
        };
        let events = loaded.state.handle(command, &context, services).await?;
        if events.is_empty() {
            return Ok(Attempt::Decided(Vec::new()));
        }
        let new_events = events
            .iter()
            .map(|event| {
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
                })
            })
            .collect::<Result<Vec<_>, CommandError<A::Error>>>()?;
        // Enough to recognize the batch in the stream: batches are atomic.
        let batch = new_events
            .first()
            .map(|event| (event.event_id, new_events.len()));
        let appended = self
            .inner
            .store
            .append(A::NAME, aggregate_id, loaded.version, new_events)
            .await;
        let appended = match appended {
            Err(StoreError::OutcomeUnknown {
                aggregate_type,
                aggregate_id,
                source,
            }) => self
                .resolve::<A>(&aggregate_id, loaded.version, batch)
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

    /// The aggregate from its newest usable snapshot, if any, and the events
    /// after it.
    async fn load_fresh<A: Aggregate>(&self, aggregate_id: &str) -> Result<Loaded<A>, ReadError> {
        let start = if A::SNAPSHOT_EVERY > 0 {
            self.restore(aggregate_id).await?
        } else {
            None
        };
        self.replay(aggregate_id, start.unwrap_or_default()).await
    }

    async fn restore<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<Loaded<A>>, ReadError> {
        let Some(snapshot) = self
            .inner
            .store
            .load_snapshot(A::NAME, aggregate_id)
            .await?
        else {
            return Ok(None);
        };
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::debug!(
                aggregate_type = A::NAME,
                aggregate_id,
                found = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "ignoring a snapshot of another schema version"
            );
            return Ok(None);
        }
        match A::from_snapshot(&snapshot.state) {
            Some(Ok(state)) => Ok(Some(Loaded {
                state,
                version: snapshot.version,
            })),
            Some(Err(error)) => {
                tracing::warn!(
                    aggregate_type = A::NAME,
                    aggregate_id,
                    version = snapshot.version,
                    "ignoring a snapshot that does not decode, replaying the stream: {error}"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Saves the state as a snapshot. A failure only costs a longer replay
    /// later, so it is logged, not returned.
    async fn take_snapshot<A: Aggregate>(&self, aggregate_id: &str, loaded: &Loaded<A>) {
        let state = match loaded.state.to_snapshot() {
            Some(Ok(state)) => state,
            Some(Err(error)) => {
                tracing::warn!(
                    aggregate_type = A::NAME,
                    aggregate_id,
                    "cannot serialize a snapshot: {error}"
                );
                return;
            }
            None => return,
        };
        let snapshot = Snapshot {
            aggregate_type: A::NAME.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            version: loaded.version,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: chrono::Utc::now(),
        };
        if let Err(error) = self.inner.store.save_snapshot(snapshot).await {
            tracing::warn!(
                aggregate_type = A::NAME,
                aggregate_id,
                "cannot save a snapshot: {error}"
            );
        }
    }

    /// Applies the events recorded after `loaded.version`.
    async fn replay<A: Aggregate>(
        &self,
        aggregate_id: &str,
        mut loaded: Loaded<A>,
    ) -> Result<Loaded<A>, ReadError> {
        self.catch_up(aggregate_id, &mut loaded).await?;
        Ok(loaded)
    }

    /// Applies the events recorded after `loaded.version`, in place. The
    /// state is touched only after the read, one event and its version at a
    /// time, so it matches its version however this ends.
    async fn catch_up<A: Aggregate>(
        &self,
        aggregate_id: &str,
        loaded: &mut Loaded<A>,
    ) -> Result<(), ReadError> {
        let envelopes = self
            .inner
            .store
            .load(A::NAME, aggregate_id, loaded.version + 1)
            .await?;
        for envelope in envelopes {
            let event = decode::<A::Event>(&envelope)?;
            loaded.state.apply(&event);
            loaded.version = envelope.sequence;
        }
        Ok(())
    }

    fn runtime<A: Aggregate>(&self) -> Arc<AggregateRuntime<A>> {
        let key = TypeId::of::<A>();
        let existing = self
            .inner
            .runtimes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(Ok(runtime)) = existing.map(Arc::downcast) {
            return runtime;
        }
        let mut runtimes = self
            .inner
            .runtimes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(Ok(runtime)) = runtimes.get(&key).cloned().map(Arc::downcast) {
            return runtime;
        }
        let services = self
            .inner
            .services
            .get(&key)
            .cloned()
            .or_else(|| Some(Arc::new(())))
            .and_then(|services| Arc::downcast::<A::Services>(services).ok());
        let runtime = Arc::new(AggregateRuntime {
            cache: Cache::<A>::new(self.inner.cache_capacity),
            services,
        });
        runtimes.insert(key, Arc::clone(&runtime) as Arc<dyn Any + Send + Sync>);
        runtime
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
struct Working<'a, A> {
    slot: async_lock::MutexGuard<'a, Option<Loaded<A>>>,
    /// `None` only until the state is loaded.
    loaded: Option<Loaded<A>>,
}

impl<A: Aggregate> Working<'_, A> {
    fn state(&self) -> &Loaded<A> {
        self.loaded
            .as_ref()
            .unwrap_or_else(|| unreachable!("the state is loaded before it is used"))
    }

    fn version(&self) -> u64 {
        self.state().version
    }

    /// Applies the events recorded after the state's version.
    async fn replay(
        &mut self,
        dispatcher: &Dispatcher,
        aggregate_id: &str,
    ) -> Result<(), ReadError> {
        let loaded = self.loaded.get_or_insert_with(Loaded::default);
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

/// What one attempt at a command came to.
enum Attempt<E> {
    /// The events were recorded (or there were none to record).
    Decided(Vec<Envelope<E>>),
    /// Another writer appended first.
    Conflict(Conflict),
    /// The stream already holds the command's id.
    Duplicate,
}

/// Why replaying a stream failed.
enum ReadError {
    Decode(Box<DecodeError>),
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<Box<DecodeError>> for ReadError {
    fn from(error: Box<DecodeError>) -> Self {
        Self::Decode(error)
    }
}

impl<E> From<ReadError> for CommandError<E> {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Decode(error) => Self::Decode(error),
            ReadError::Store(error) => Self::Store(error),
        }
    }
}

impl From<ReadError> for LoadError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Decode(error) => Self::Decode(error),
            ReadError::Store(error) => Self::Store(error),
        }
    }
}

/// Decodes a stored envelope's payload into the event enum.
pub(crate) fn decode<E: Event>(envelope: &Envelope) -> Result<E, Box<DecodeError>> {
    E::decode(
        &envelope.event_name,
        envelope.event_version,
        &envelope.payload,
    )
    .map_err(|source| {
        Box::new(DecodeError {
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            sequence: envelope.sequence,
            position: envelope.position,
            event_name: envelope.event_name.clone(),
            event_version: envelope.event_version,
            source,
        })
    })
}

/// Builds a [`Cqrs`] with chosen event handlers, services and limits.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Cqrs, MemoryStore};
///
/// // Only the handlers of one module, as a test that needs isolation would.
/// let app = Cqrs::builder(MemoryStore::new())
///     .event_handlers(|handler| handler.name.starts_with("my_app::billing::"))
///     .max_retries(3)
///     .build()?;
/// # Ok::<_, cqrs_core::RegistryError>(())
/// ```
pub struct CqrsBuilder<S> {
    store: S,
    filter: Box<dyn Fn(&EventHandlerRegistration) -> bool>,
    extra_handlers: EventHandlers,
    read_models: Option<ReadModels>,
    processors: Vec<Box<dyn Processor>>,
    processor_settings: Settings,
    services: foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    max_retries: u32,
    cache_capacity: usize,
}

impl<S: EventStore> CqrsBuilder<S> {
    /// Delivers only to the registered `#[event_handler]` functions that `filter`
    /// accepts (by default, all of them).
    pub fn event_handlers(
        mut self,
        filter: impl Fn(&EventHandlerRegistration) -> bool + 'static,
    ) -> Self {
        self.filter = Box::new(filter);
        self
    }

    /// Delivers to no registered `#[event_handler]` function.
    pub fn without_event_handlers(self) -> Self {
        self.event_handlers(|_| false)
    }

    /// Adds a handler for events of type `P`, named `name` in failures and logs.
    pub fn on_event<P, O>(
        mut self,
        name: &str,
        handler: impl Fn(&P, &Envelope<P::Event>) -> O + Send + Sync + 'static,
    ) -> Self
    where
        P: EventPayload,
        O: HandlerOutcome,
    {
        self.extra_handlers.register_fn(name, handler);
        self
    }

    /// The services command handlers of aggregate `A` receive
    /// (`#[aggregate(services = ..)]`).
    pub fn services<A: Aggregate>(mut self, services: A::Services) -> Self {
        self.services.insert(TypeId::of::<A>(), Arc::new(services));
        self
    }

    /// Where projections keep their documents and processors their
    /// checkpoints: [`ReadModels::in_memory`], or the event store's own
    /// database (`SqliteStore::read_models`, `PostgresStore::read_models`).
    pub fn read_models(mut self, read_models: ReadModels) -> Self {
        self.read_models = Some(read_models);
        self
    }

    /// Runs projection `P` (see [`Cqrs::processors`]).
    pub fn projection<P: Projection>(mut self) -> Self {
        self.processors.push(Box::new(ProjectionRunner::<P>::new()));
        self
    }

    /// Runs process manager `manager`.
    pub fn process_manager<M: ProcessManager>(mut self, manager: M) -> Self {
        self.processors
            .push(Box::new(ProcessManagerRunner::new(manager)));
        self
    }

    /// Runs every registered `#[projection]` and `#[process_manager]` that
    /// `filter` accepts.
    pub fn registered_processors(
        mut self,
        filter: impl Fn(&ProcessorRegistration) -> bool,
    ) -> Self {
        for registration in Registry::global().processors() {
            if filter(registration) {
                self.processors.push(registration.build());
            }
        }
        self
    }

    /// How often idle processors look for new events when nothing wakes
    /// them (default 500 ms).
    pub fn poll_interval(mut self, poll_interval: std::time::Duration) -> Self {
        self.processor_settings.poll_interval = poll_interval;
        self
    }

    /// How failing processors are retried before they stop.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.processor_settings.retry = retry;
        self
    }

    /// How many events a processor handles per transaction (default 500).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.processor_settings.batch.events = batch_size.max(1);
        self
    }

    /// How many bytes of events a processor reads per transaction: a batch
    /// ends at the event that passes this budget, whatever its count
    /// (default 8 MiB). An event larger than the budget is a batch of its own.
    pub fn batch_bytes(mut self, batch_bytes: usize) -> Self {
        self.processor_settings.batch.bytes = batch_bytes;
        self
    }

    /// How many times a command is decided again after losing a race to
    /// append (default 10).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// How many aggregates per type stay loaded between commands (default 65,536).
    pub fn cache_capacity(mut self, cache_capacity: usize) -> Self {
        self.cache_capacity = cache_capacity;
        self
    }

    /// Checks the registry for duplicate names and builds the app.
    pub fn build(self) -> Result<Cqrs<S>, RegistryError> {
        let registry = Registry::global();
        registry.check()?;
        if !self.processors.is_empty() && self.read_models.is_none() {
            return Err(RegistryError::NoReadModels);
        }
        let mut names: Vec<&str> = self
            .processors
            .iter()
            .map(|processor| processor.name())
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(RegistryError::DuplicateProcessor {
                name: pair[0].to_owned(),
            });
        }
        let mut handlers = self.extra_handlers;
        for &registration in registry.event_handlers() {
            if (self.filter)(registration) {
                handlers.register(registration);
            }
        }
        tracing::debug!(handlers = handlers.len(), "cqrs app built");
        let store = Arc::new(self.store);
        let dyn_store = Arc::clone(&store) as Arc<dyn DynEventStore>;
        let appended = Arc::new(event_listener::Event::new());
        let inner = Arc::new_cyclic(|app| Inner {
            store: Arc::clone(&dyn_store),
            processors: Processors::new(
                self.processors,
                dyn_store,
                self.read_models,
                app.clone(),
                Arc::clone(&appended),
                self.processor_settings,
            ),
            appended,
            handlers,
            services: self.services,
            runtimes: RwLock::new(foldhash::HashMap::default()),
            max_retries: self.max_retries,
            cache_capacity: self.cache_capacity,
        });
        Ok(Cqrs {
            dispatcher: Dispatcher { inner },
            store,
        })
    }
}

impl<S> fmt::Debug for CqrsBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqrsBuilder")
            .field("max_retries", &self.max_retries)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}
