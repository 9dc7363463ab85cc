//! [`Cqrs`]: the application. It runs commands against aggregates, records
//! their events, and hosts the processors that follow the log.

mod builder;
mod command;
mod deadline_runner;
mod deadlines;
mod decide;
mod hosting;
mod idempotency;
mod inline;
mod process;
mod process_deadlines;
mod replay;

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use tracing::Instrument;

pub use builder::{BuildError, CqrsBuilder};
#[doc(hidden)]
pub use deadlines::DeadlineOwner;
pub(crate) use deadlines::FireOutcome;
pub use deadlines::{
    Cancelled, DeadlineStatus, Deadlines, FailedDeadline, FiredDeadlines, FiringLag,
};
pub(crate) use idempotency::Reuse;
pub(crate) use process::ProcessManagerRunner;
pub use process::{ProcessContext, ProcessManager, SentCommand};
pub(crate) use replay::{decode, decode_error};

use crate::aggregate::{Aggregate, Command, IntoCommand};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::envelope::{Envelope, Metadata};
use crate::error::{CommandError, LoadError};
use crate::handler::HandlerFailure;
use crate::middleware::{CommandLayer, CommandRequest};
use crate::processor::{NamedProcessor, Processors, ProcessorsError};
use crate::store::{DynEventStore, EventStore, ReadLimit, StoreError};
use crate::telemetry::{CommandMetrics, CommandOutcome};
use crate::view::ViewStore;
use inline::InlineHandlers;

/// Errors of `execute` for the aggregate that handles command `C`.
type ErrorOf<C> = CommandError<<<C as IntoCommand>::Aggregate as Aggregate>::Error>;

/// Events of the aggregate that handles command `C`.
type EventOf<C> = <<C as IntoCommand>::Aggregate as Aggregate>::Event;

/// The application: hosts any number of aggregate types over one event store.
///
/// Cloning is cheap and every clone shares the store, the cache, the
/// handlers and the processors: keep one in a web framework's state, or
/// hand it to tasks. Process managers send their commands through it too.
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
#[derive(Clone)]
pub struct Cqrs {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn DynEventStore>,
    processors: Processors,
    views: ViewStore,
    /// Woken after every append this app makes, for the processors.
    appended: Arc<event_listener::Event>,
    handlers: InlineHandlers,
    /// Run before every command, in order.
    layers: Vec<Box<dyn CommandLayer>>,
    services: foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    hosting: hosting::Hosting,
    runtimes: RwLock<foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    max_retries: u32,
    cache_capacity: usize,
    clock: Arc<dyn Clock>,
    /// The aggregates with `#[deadline]` handlers that this app hosts.
    deadline_owners: Vec<&'static DeadlineOwner>,
    /// What this app's fires came to.
    deadline_stats: deadlines::FireStats,
}

/// What one aggregate type needs at run time, created on its first command.
struct AggregateRuntime<A: Aggregate> {
    cache: Cache<A>,
    services: Option<Arc<A::Services>>,
    metrics: CommandMetrics,
}

/// The outcome of a command that succeeded.
///
/// A command sent again with the same [`Metadata::command_id`] (a retried
/// request) is not run again: its outcome is the first run's, read from the
/// store's command index without loading the aggregate, with
/// [`duplicate`](Self::duplicate) set.
#[derive(Debug)]
#[non_exhaustive]
pub struct Committed<E> {
    /// The aggregate the command targeted.
    pub aggregate_id: String,
    /// The aggregate's version after the command (for a duplicate, after its
    /// first run).
    pub version: u64,
    /// The recorded events, in order; empty if the command decided on none.
    /// For a duplicate, the events its first run recorded.
    pub events: Vec<Envelope<E>>,
    /// How many times the command was decided again after another writer won
    /// the race to append.
    pub retries: u32,
    /// The event handlers that failed on these events. The events stay recorded.
    pub handler_failures: Vec<HandlerFailure>,
    /// The command's [`Metadata::command_id`] was already recorded on this
    /// aggregate, so it was not run again: `version` and `events` are what
    /// the first run recorded. (A first run that recorded no events left no
    /// trace, so its repeat runs again.)
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

impl fmt::Debug for Cqrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cqrs")
            .field("handlers", &self.inner.handlers)
            .field("processors", &self.inner.processors)
            .field("max_retries", &self.inner.max_retries)
            .field("cache_capacity", &self.inner.cache_capacity)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl Cqrs {
    /// An app over `store` with every registered `#[event_handler]`,
    /// `#[projection]` and `#[process_manager]`, after checking the registry
    /// for duplicate names.
    pub fn new(store: impl EventStore) -> Result<Self, BuildError> {
        Self::builder(store).build()
    }

    /// An app with chosen handlers, processors, services and limits.
    pub fn builder(store: impl EventStore) -> CqrsBuilder {
        CqrsBuilder::new(store)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The log, for what records events other than commands (a consumer).
    pub(crate) fn store(&self) -> &dyn DynEventStore {
        &*self.inner.store
    }

    /// Refuses to receive another service's events unless the app named
    /// the domains it hosts, in a program that declares domains.
    pub(crate) fn check_receiving(&self) -> Result<(), BuildError> {
        self.inner.hosting.check_receiving()
    }

    /// Wakes the processors after an append made outside `execute`.
    pub(crate) fn appended(&self) {
        self.inner.appended.notify(usize::MAX);
    }

    /// Runs a command on the aggregate `aggregate_id`, inferred from the command's type.
    ///
    /// Loads the aggregate (from the cache when it is hot), lets the handler
    /// decide, appends the events at the version the decision saw, applies them
    /// and delivers them to the inline event handlers. When another writer
    /// appended first, it catches up and decides again, up to the configured
    /// retries.
    ///
    /// Commands this app sends to one aggregate run one at a time. Inline
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
        metadata: Metadata,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        self.send(aggregate_id, command, metadata, Reuse::Refused)
            .await
    }

    /// Runs a command; `reuse` says whether its command id sent with
    /// another command is refused.
    pub(crate) async fn send<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
        mut metadata: Metadata,
        reuse: Reuse,
    ) -> Result<Committed<EventOf<C>>, ErrorOf<C>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(crate::id::new_id());
        }
        let command = command.into_command();
        let aggregate_type = C::Aggregate::NAME;
        let span = if crate::telemetry::spans_at(tracing::Level::INFO) {
            tracing::info_span!(
                "execute",
                aggregate_type,
                aggregate_id,
                command = Command::name(&command),
                version = tracing::field::Empty,
                retries = tracing::field::Empty,
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let runtime = self.runtime::<C::Aggregate>();
        // No subscriber wants the span: nothing is recorded on it, entered
        // or written into the metadata (with tracing's `log` feature each
        // of those still costs a check of the logger).
        let traced = !span.is_disabled();
        let executed = if traced {
            crate::telemetry::record(&span, &mut metadata);
            self.dispatch(&runtime, aggregate_id, command, metadata, reuse)
                .instrument(span.clone())
                .await
        } else {
            self.dispatch(&runtime, aggregate_id, command, metadata, reuse)
                .await
        };
        let (outcome, retries) = match &executed {
            Ok(done) => {
                if traced {
                    span.record("version", done.version);
                }
                let outcome = if done.duplicate {
                    CommandOutcome::Duplicate
                } else {
                    CommandOutcome::Ok
                };
                (outcome, done.retries)
            }
            Err(CommandError::Conflict { attempts, .. }) => {
                (CommandOutcome::Conflict, attempts.saturating_sub(1))
            }
            Err(error) => (CommandOutcome::of_error(error), 0),
        };
        if traced {
            span.record("retries", retries);
            span.record("outcome", outcome.name());
        }
        runtime.metrics.command(outcome, retries);
        executed
    }

    /// Passes the command through the layers, then runs it.
    async fn dispatch<A: Aggregate>(
        &self,
        runtime: &AggregateRuntime<A>,
        aggregate_id: &str,
        mut command: A::Command,
        mut metadata: Metadata,
        reuse: Reuse,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        if let Some(domain) = self.inner.hosting.domain_elsewhere(TypeId::of::<A>()) {
            return Err(CommandError::NotHosted {
                aggregate_type: A::NAME,
                domain,
            });
        }
        if !self.inner.layers.is_empty() {
            let command_name = Command::name(&command);
            let mut request = CommandRequest {
                aggregate_type: A::NAME,
                aggregate_id,
                command_name,
                command: &mut command,
                metadata: &mut metadata,
            };
            for layer in &self.inner.layers {
                layer
                    .before(&mut request)
                    .await
                    .map_err(|rejection| CommandError::Rejected {
                        command: command_name,
                        rejection,
                    })?;
            }
        }
        self.run(runtime, aggregate_id, command, metadata, reuse)
            .await
    }

    /// [`execute`](Self::execute), then waits until processor `P` (a
    /// projection or process manager) has processed the command's events:
    /// read your own writes. Needs [`Processors::run`] going on this node
    /// or another; see [`Processors::wait_for`].
    pub async fn execute_and_wait<P: NamedProcessor, C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
    ) -> Result<Committed<EventOf<C>>, ExecuteAndWaitError<<C::Aggregate as Aggregate>::Error>>
    {
        self.execute_and_wait_with::<P, C>(aggregate_id, command, Metadata::default())
            .await
    }

    /// [`execute_and_wait`](Self::execute_and_wait) with metadata to record
    /// on every event, such as a [`Metadata::command_id`] that makes a retry
    /// safe. A duplicate waits for the events of the command's first run.
    pub async fn execute_and_wait_with<P: NamedProcessor, C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
        metadata: Metadata,
    ) -> Result<Committed<EventOf<C>>, ExecuteAndWaitError<<C::Aggregate as Aggregate>::Error>>
    {
        let done = self
            .execute_with(aggregate_id, command, metadata)
            .await
            .map_err(ExecuteAndWaitError::Command)?;
        if let Some(position) = done.last_position() {
            self.processors()
                .wait_for::<P>(position)
                .await
                .map_err(ExecuteAndWaitError::Wait)?;
        }
        Ok(done)
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

    /// The app's projections, process managers and event handlers.
    pub fn processors(&self) -> &Processors {
        &self.inner.processors
    }

    /// The app's views, for queries.
    pub fn views(&self) -> &ViewStore {
        &self.inner.views
    }

    /// Events of the global log from `from_position` on; see
    /// [`EventStore::read_all`].
    pub async fn read_all(
        &self,
        from_position: u64,
        limit: impl Into<ReadLimit>,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.store.read_all(from_position, limit.into()).await
    }

    /// The events of one stream from `from_sequence` on, as stored; see
    /// [`EventStore::load`].
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner
            .store
            .load(aggregate_type, aggregate_id, from_sequence)
            .await
    }

    /// The position of the newest event in the log; 0 when it is empty.
    pub async fn last_position(&self) -> Result<u64, StoreError> {
        self.inner.store.last_position().await
    }

    /// The app's one `T`, made on first use: what an aggregate or a
    /// decision type keeps.
    fn runtime_of<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let key = TypeId::of::<T>();
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
        let runtime = runtimes
            .entry(key)
            .or_insert_with(|| Arc::new(make()))
            .clone();
        Arc::downcast(runtime).unwrap_or_else(|_| unreachable!("kept under its own type's id"))
    }

    fn runtime<A: Aggregate>(&self) -> Arc<AggregateRuntime<A>> {
        self.runtime_of(|| {
            let services = self
                .inner
                .services
                .get(&TypeId::of::<A>())
                .cloned()
                .or_else(|| Some(Arc::new(())))
                .and_then(|services| Arc::downcast::<A::Services>(services).ok());
            AggregateRuntime {
                cache: Cache::<A>::new(self.inner.cache_capacity),
                services,
                metrics: CommandMetrics::new(A::NAME, self.inner.store.backend()),
            }
        })
    }
}

/// Why [`Cqrs::execute_and_wait`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteAndWaitError<E> {
    /// The command failed; nothing was recorded.
    #[error(transparent)]
    Command(CommandError<E>),
    /// The command's events are recorded, but the processor stopped first.
    #[error(transparent)]
    Wait(ProcessorsError),
}
