//! [`CqrsBuilder`]: what an app runs (handlers, processors, services, where
//! its views live), checked at [`build`](CqrsBuilder::build).

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::deadline_runner::DeadlineRunner;
use super::deadlines::{self, FireStats};
use super::hosting::Hosting;
use super::inline::InlineHandlers;
use super::process::ProcessManagerRunner;
use super::{Cqrs, Inner, ProcessManager};
use crate::aggregate::{Aggregate, EventPayload};
use crate::clock::{Clock, SystemClock};
use crate::domain::Domain;
use crate::envelope::Envelope;
use crate::handler::HandlerOutcome;
use crate::middleware::CommandLayer;
use crate::processor::{
    Lease, Processor, ProcessorKind, Processors, ProjectionRunner, RetryPolicy, Settings,
    TableProjectionRunner,
};
use crate::registry::{
    EventHandlerRegistration, ProcessorRegistration, Registry, RegistryError, UnknownSelection,
};
use crate::store::{DynEventStore, EventStore};
use crate::view::{Projection, TableProjection, ViewStore};

/// Builds a [`Cqrs`]: by default with every registered `#[event_handler]`,
/// `#[projection]` and `#[process_manager]`, its views in the store's own
/// database, and the services each aggregate declares.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Cqrs, MemoryStore};
///
/// // Only the handlers and processors of one module, as a test that needs
/// // isolation would.
/// let app = Cqrs::builder(MemoryStore::new())
///     .event_handlers(|handler| handler.name.starts_with("my_app::billing::"))
///     .processors(|processor| processor.name.starts_with("billing."))
///     .max_retries(3)
///     .build()?;
/// # Ok::<_, cqrs_core::BuildError>(())
/// ```
pub struct CqrsBuilder {
    store: Arc<dyn DynEventStore>,
    views: Option<ViewStore>,
    handler_filter: Box<dyn Fn(&EventHandlerRegistration) -> bool>,
    processor_filter: Box<dyn Fn(&ProcessorRegistration) -> bool>,
    /// Whether the processors include `cqrs.deadlines`, when the app hosts
    /// an aggregate with deadlines.
    fire_deadlines: bool,
    closures: InlineHandlers,
    /// Processors named one by one; each replaces a registered one of its name.
    explicit: Vec<Box<dyn Processor>>,
    /// Segment counts set by name, over the declared ones.
    segments: BTreeMap<String, u32>,
    settings: Settings,
    services: foldhash::HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    layers: Vec<Box<dyn CommandLayer>>,
    /// The first name a gateway selects that nothing registered has.
    unknown: Option<UnknownSelection>,
    /// The domains named with `host`, by module.
    hosted: Vec<&'static str>,
    max_retries: u32,
    cache_capacity: usize,
    clock: Arc<dyn Clock>,
}

impl CqrsBuilder {
    pub(super) fn new(store: impl EventStore) -> Self {
        Self {
            store: Arc::new(store),
            views: None,
            handler_filter: Box::new(|_| true),
            processor_filter: Box::new(|_| true),
            fire_deadlines: true,
            closures: InlineHandlers::default(),
            explicit: Vec::new(),
            segments: BTreeMap::new(),
            settings: Settings::default(),
            services: foldhash::HashMap::default(),
            layers: Vec::new(),
            unknown: None,
            hosted: Vec::new(),
            max_retries: 10,
            cache_capacity: 65_536,
            clock: Arc::new(SystemClock),
        }
    }

    /// Runs only the registered `#[event_handler]` functions that `filter`
    /// accepts (by default, all of them).
    pub fn event_handlers(
        mut self,
        filter: impl Fn(&EventHandlerRegistration) -> bool + 'static,
    ) -> Self {
        self.handler_filter = Box::new(filter);
        self
    }

    /// Runs no registered `#[event_handler]` function.
    pub fn without_event_handlers(self) -> Self {
        self.event_handlers(|_| false)
    }

    /// Adds an inline handler for events of type `P`, named `name` in
    /// failures and logs: it runs right after each commit of this app, in
    /// this process, at most once (see `#[event_handler(inline)]`).
    pub fn on_event<P, O>(
        mut self,
        name: &str,
        handler: impl Fn(&P, &Envelope<P::Event>) -> O + Send + Sync + 'static,
    ) -> Self
    where
        P: EventPayload,
        O: HandlerOutcome,
    {
        self.closures.register_fn(name, handler);
        self
    }

    /// The services command handlers of aggregate `A` receive
    /// (`#[aggregate(services = ..)]`).
    pub fn services<A: Aggregate>(mut self, services: A::Services) -> Self {
        self.services.insert(TypeId::of::<A>(), Arc::new(services));
        self
    }

    /// Runs `layer` before every command, after the layers added before it;
    /// see [`middleware`](crate::middleware).
    pub fn layer(mut self, layer: impl CommandLayer) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Where views and processors' checkpoints live (by default the store's
    /// own: `EventStore::views`).
    pub fn views(mut self, views: ViewStore) -> Self {
        self.views = Some(views);
        self
    }

    /// Hosts domain `D`: its aggregates take commands, its projections,
    /// process managers and event handlers run (as the filters allow), and
    /// its aggregates' services are required. Once an app names a domain,
    /// it hosts only the domains it names, and the registrations outside
    /// every domain. An app that names none hosts everything, which
    /// [`build`](Self::build) refuses when that would run the processors of
    /// two domains or more: see [`Domain`].
    pub fn host<D: Domain>(mut self) -> Self {
        self.hosted.push(D::MODULE);
        self
    }

    /// Runs `processor`, named by the app rather than registered (such as
    /// a gateway), refusing at `build()` what `selected` found unknown.
    pub(crate) fn explicit_processor(
        mut self,
        processor: Box<dyn Processor>,
        selected: Result<(), UnknownSelection>,
    ) -> Self {
        if let Err(unknown) = selected
            && self.unknown.is_none()
        {
            self.unknown = Some(unknown);
        }
        self.explicit.push(processor);
        self
    }

    /// Runs only the registered `#[projection]`s and `#[process_manager]`s
    /// that `filter` accepts (by default, all of them).
    pub fn processors(mut self, filter: impl Fn(&ProcessorRegistration) -> bool + 'static) -> Self {
        self.processor_filter = Box::new(filter);
        self
    }

    /// Runs no registered `#[projection]` or `#[process_manager]`, nor the
    /// deadlines' runner (`cqrs.deadlines`): such an app fires deadlines
    /// only when told to ([`Deadlines::fire_due`](crate::Deadlines::fire_due)).
    pub fn without_processors(mut self) -> Self {
        self.fire_deadlines = false;
        self.processors(|_| false)
    }

    /// Runs projection `P`, registered or not.
    pub fn projection<P: Projection>(mut self) -> Self {
        self.explicit.push(Box::new(ProjectionRunner::<P>::new()));
        self
    }

    /// Runs table projection `P`, registered or not.
    pub fn table_projection<P: TableProjection>(mut self) -> Self {
        self.explicit
            .push(Box::new(TableProjectionRunner::<P>::new()));
        self
    }

    /// Runs process manager `manager` (in place of a registered one of its
    /// type, which starts from `Default`).
    pub fn process_manager<M: ProcessManager>(mut self, manager: M) -> Self {
        self.explicit
            .push(Box::new(ProcessManagerRunner::new(manager)));
        self
    }

    /// Runs processor `name` (a projection, process manager or durable
    /// event handler) with `segments` segments, over what it declares.
    ///
    /// A processor that ran with another count changes it once no node
    /// holds a lease on it: a process manager or handler starts its new
    /// segments at the slowest old checkpoint (events after it are handled
    /// again, which command ids make harmless to a process manager); a
    /// projection only when every old segment is at one position, as its
    /// views would count events twice otherwise. Until then the processor
    /// reports [`ViewError::Segments`](crate::ViewError::Segments) and
    /// tries again at every lease renewal.
    pub fn segments(mut self, name: &str, segments: u32) -> Self {
        self.segments.insert(name.to_owned(), segments.max(1));
        self
    }

    /// This instance's node id among those that share the processors
    /// (default: host name, process id and a random part). Two live
    /// instances must not share one. An instance restarted under the id it
    /// had (a pod's name, say) takes its segments back at once, where a new
    /// id waits for the old claims' leases to run out.
    pub fn node_id(mut self, node: impl Into<String>) -> Self {
        self.settings.node = node.into().into();
        self
    }

    /// How long this node's claims on segments last and how often it renews
    /// them (default 10 s, renewed every 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use cqrs_core::processor::Lease;
    /// use cqrs_core::{Cqrs, MemoryStore};
    ///
    /// let app = Cqrs::builder(MemoryStore::new())
    ///     .node_id("orders-0")
    ///     .lease(Lease::new(Duration::from_secs(5), Duration::from_secs(1)))
    ///     .build()?;
    /// assert_eq!(app.processors().node(), "orders-0");
    /// # Ok::<_, cqrs_core::BuildError>(())
    /// ```
    pub fn lease(mut self, lease: Lease) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How often idle processors look for new events when nothing wakes
    /// them (default 500 ms).
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.settings.poll_interval = poll_interval;
        self
    }

    /// How failing processors are retried.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.settings.retry = retry;
        self
    }

    /// How many events a processor handles per transaction (default 500).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.settings.batch.events = batch_size.max(1);
        self
    }

    /// How many bytes of events a processor reads per transaction: a batch
    /// ends at the event that passes this budget, whatever its count
    /// (default 8 MiB). An event larger than the budget is a batch of its own.
    pub fn batch_bytes(mut self, batch_bytes: usize) -> Self {
        self.settings.batch.bytes = batch_bytes;
        self
    }

    /// How many times a command is decided again after losing a race to
    /// append (default 10).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The clock its command handlers read through
    /// [`CommandContext::now`](crate::CommandContext::now): the system's by
    /// default; a [`TestClock`](crate::TestClock) in a test that moves time.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many aggregates per type stay loaded between commands (default 65,536).
    pub fn cache_capacity(mut self, cache_capacity: usize) -> Self {
        self.cache_capacity = cache_capacity;
        self
    }

    /// Checks what the app needs and builds it: the registry has no two
    /// things under one name ([`BuildError::Registry`]), every name a
    /// gateway selects exists ([`BuildError::UnknownSelection`]), an app
    /// that names no domain runs the processors of one at most
    /// ([`BuildError::DomainsNotNamed`]), every hosted aggregate that
    /// declares services was given them ([`BuildError::MissingServices`]),
    /// and no two processors share a name
    /// ([`BuildError::DuplicateProcessor`]).
    pub fn build(mut self) -> Result<Cqrs, BuildError> {
        let registry = Registry::global();
        registry.check()?;
        if let Some(unknown) = self.unknown {
            return Err(unknown.into());
        }
        let mut hosting = Hosting::new(&registry, std::mem::take(&mut self.hosted));
        let mut handlers = std::mem::take(&mut self.closures);
        let mut processors = self.hosted_processors(&registry, &mut hosting, &mut handlers);
        let views = self.views.take().unwrap_or_else(|| self.store.views());
        if views.sql().is_none() {
            // Views in memory hold no tables: a registered table projection
            // is left out (an app tested in memory keeps its documents), one
            // asked for by type is a mistake.
            if let Some(tables) = self.explicit.iter().find(|p| p.tables().is_some()) {
                return Err(BuildError::TablesNeedSql {
                    projection: tables.name(),
                });
            }
            processors.retain(|processor| {
                let documents = processor.tables().is_none();
                if !documents {
                    tracing::info!(
                        projection = processor.name(),
                        "views in memory hold no tables: table projection left out"
                    );
                }
                documents
            });
        }
        processors.extend(std::mem::take(&mut self.explicit));
        hosting.check()?;
        let deadline_owners = deadlines::owners(&hosting, &processors);
        if self.fire_deadlines && !deadline_owners.is_empty() {
            processors.push(Box::new(DeadlineRunner::new()));
        }
        hosting.check_services(&registry, |type_id| self.services.contains_key(&type_id))?;
        distinct_keys(&processors)?;
        let kinds = |kind| {
            processors
                .iter()
                .filter(|processor| processor.kind() == kind)
                .count()
        };
        tracing::debug!(
            inline_handlers = handlers.len(),
            event_handlers = kinds(ProcessorKind::EventHandler),
            projections = kinds(ProcessorKind::Projection),
            process_managers = kinds(ProcessorKind::ProcessManager),
            gateways = kinds(ProcessorKind::Gateway),
            deadline_owners = deadline_owners.len(),
            "cqrs app built"
        );
        let appended = Arc::new(event_listener::Event::new());
        let store = self.store;
        let settings = self.settings;
        let inner = Arc::new_cyclic(|app: &std::sync::Weak<Inner>| {
            let app: std::sync::Weak<dyn Any + Send + Sync> = app.clone();
            Inner {
                processors: Processors::new(
                    processors
                        .into_iter()
                        .map(|processor| {
                            let segments = self
                                .segments
                                .get(processor.name())
                                .copied()
                                .unwrap_or_else(|| processor.segments());
                            (processor, segments)
                        })
                        .collect(),
                    Arc::clone(&store),
                    views.clone(),
                    app,
                    Arc::clone(&appended),
                    settings,
                ),
                store,
                views,
                appended,
                handlers,
                layers: self.layers,
                services: self.services,
                hosting,
                runtimes: RwLock::new(foldhash::HashMap::default()),
                max_retries: self.max_retries,
                cache_capacity: self.cache_capacity,
                clock: self.clock,
                deadline_owners,
                deadline_stats: FireStats::default(),
            }
        });
        Ok(Cqrs::from_inner(inner))
    }
}

impl CqrsBuilder {
    /// The registered event handlers and processors of the hosted domains
    /// that the filters let through: inline handlers go into `handlers`,
    /// the others are returned, but for those an explicit processor
    /// replaces.
    fn hosted_processors(
        &self,
        registry: &Registry,
        hosting: &mut Hosting,
        handlers: &mut InlineHandlers,
    ) -> Vec<Box<dyn Processor>> {
        let mut processors = Vec::new();
        for &registration in registry.event_handlers() {
            if !(self.handler_filter)(registration) || !hosting.hosts(registration.module) {
                continue;
            }
            hosting.runs(registration.module);
            if registration.inline {
                handlers.register(
                    registration.name,
                    (registration.event_enum)(),
                    registration.event_name,
                    registration.call,
                );
            } else {
                processors.push(registration.processor());
            }
        }
        let explicit: BTreeSet<&str> = self
            .explicit
            .iter()
            .map(|processor| processor.key())
            .collect();
        for &registration in registry.processors() {
            if (self.processor_filter)(registration) && hosting.hosts(registration.module) {
                hosting.runs(registration.module);
                let processor = registration.build();
                if !explicit.contains(processor.key()) {
                    processors.push(processor);
                }
            }
        }
        processors
    }
}

/// Refuses two processors under one key: each keeps its own segments.
fn distinct_keys(processors: &[Box<dyn Processor>]) -> Result<(), BuildError> {
    let mut keys: Vec<&str> = processors.iter().map(|processor| processor.key()).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(BuildError::DuplicateProcessor {
            name: pair[0].to_owned(),
        }),
        None => Ok(()),
    }
}

impl fmt::Debug for CqrsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqrsBuilder")
            .field("max_retries", &self.max_retries)
            .field("cache_capacity", &self.cache_capacity)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What [`CqrsBuilder::build`] found missing or ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two things of the program share a name; see [`RegistryError`].
    #[error(transparent)]
    Registry(#[from] RegistryError),

    /// An aggregate declares `#[aggregate(services = ..)]` and the app was
    /// not given them.
    #[error(
        "aggregate `{aggregate}` ({rust_type}) needs its services `{services}`: pass them with `CqrsBuilder::services::<{rust_type}>(..)`"
    )]
    MissingServices {
        /// The aggregate's stored name.
        aggregate: &'static str,
        /// Its Rust type.
        rust_type: &'static str,
        /// The services type it declares.
        services: &'static str,
    },

    /// A table projection was asked for by type
    /// ([`CqrsBuilder::table_projection`]) over views in memory, which
    /// hold no tables. (A registered one is left out of such an app.)
    #[error(
        "table projection `{projection}` needs its views in SQLite or PostgreSQL; views in memory hold no tables"
    )]
    TablesNeedSql {
        /// The projection.
        projection: &'static str,
    },

    /// Two processors of the app share a name (projections, process
    /// managers, durable event handlers given `name = ..`, or the same one
    /// given to the builder twice); each keeps its own checkpoint.
    #[error(
        "two processors of the app are named `{name}`; each needs a name of its own, which keys its checkpoint"
    )]
    DuplicateProcessor {
        /// The name.
        name: String,
    },

    /// A gateway or consumer selects, by a name given as a string, an
    /// aggregate type or event that no registered aggregate has, or binds
    /// a pattern that matches none of their events: it would publish or
    /// receive nothing.
    #[error(transparent)]
    UnknownSelection(#[from] UnknownSelection),

    /// The app names no domain to host, and would run the processors or
    /// event handlers of several (or receive another service's events into
    /// a program that declares domains): it must say which it hosts, so
    /// no domain's process manager runs where it does not belong.
    #[error(
        "this app would host {}: name the domains it hosts with `CqrsBuilder::host::<..>()`",
        domains.join(", ")
    )]
    DomainsNotNamed {
        /// The domains it would host, by marker type.
        domains: Vec<String>,
    },

    /// An inbox consumer's app hosts no process manager or event handler:
    /// nothing would react to the messages it receives.
    #[error(
        "consumer `{consumer}` reacts through an inbox, but its app hosts no #[process_manager] \
         or #[event_handler]: host the domain that declares them"
    )]
    NothingReacts {
        /// The consumer.
        consumer: String,
    },
}
