//! What the macros register through `inventory`, and the checks the compiler
//! cannot make because they span the whole program.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

pub use crate::aggregate::EventType;
use crate::aggregate::{Aggregate, Decision};
use crate::deadline::{Deadline, DeadlineContext};
use crate::envelope::JsonPayload;
use crate::error::CommandError;
use crate::future::BoxFuture;
use crate::handler::HandlerFn;
use crate::processor::{
    HandlerRunner, Processor, ProcessorKind, ProjectionRunner, TableProjectionRunner,
};
use crate::view::{Projection, TableProjection};

#[doc(hidden)]
pub use crate::processor::DecodeFn;

/// An aggregate type, registered by `#[derive(Aggregate)]`.
#[derive(Debug)]
pub struct AggregateRegistration {
    /// The stored name.
    pub name: &'static str,
    /// The Rust path of the aggregate type.
    pub rust_type: &'static str,
    /// The module it is declared in, which places it in a domain.
    pub module: &'static str,
    /// The command enum, as written in `#[aggregate(command = ..)]`.
    pub command_type: &'static str,
    /// The event enum, as written in `#[aggregate(event = ..)]`.
    pub event_type: &'static str,
    /// The services type, as written in `#[aggregate(services = ..)]`, if any.
    pub services: Option<&'static str>,
    /// The stored names and versions of the events it records; see
    /// [`events`](Self::events).
    #[doc(hidden)]
    pub event_types: fn() -> &'static [EventType],
    /// `TypeId::of` the aggregate type, to find the services an app was given.
    #[doc(hidden)]
    pub type_id: fn() -> TypeId,
}

impl AggregateRegistration {
    /// The stored names and versions of the events it records.
    pub fn events(&self) -> &'static [EventType] {
        (self.event_types)()
    }
}

/// A `#[deadline]` handler of an aggregate, registered by `#[aggregate_impl]`.
pub struct DeadlineRegistration {
    /// The stored name of the aggregate that schedules the deadline.
    pub aggregate: &'static str,
    /// The deadline type's stored name.
    pub name: &'static str,
    /// The version of the deadline's value the handler reads.
    pub version: u32,
    /// The Rust type of the deadline.
    pub rust_type: &'static str,
    aggregate_type: fn() -> TypeId,
    /// A `&'static DeadlineHandler<A>` for the aggregate `A`.
    handler: &'static (dyn Any + Send + Sync),
}

impl DeadlineRegistration {
    #[doc(hidden)]
    pub const fn new<A: Aggregate, D: Deadline>(
        rust_type: &'static str,
        handler: &'static DeadlineHandler<A>,
    ) -> Self {
        Self {
            aggregate: A::NAME,
            name: D::NAME,
            version: D::VERSION,
            rust_type,
            aggregate_type: crate::__private::type_id::<A>,
            handler,
        }
    }

    /// The handler of deadline `name` on aggregate `A`.
    pub(crate) fn find<A: Aggregate>(
        name: &str,
    ) -> Option<(&'static Self, &'static DeadlineHandler<A>)> {
        inventory::iter::<Self>
            .into_iter()
            .find_map(|registration| {
                let handler = registration.handler.downcast_ref::<DeadlineHandler<A>>()?;
                (registration.name == name && (registration.aggregate_type)() == TypeId::of::<A>())
                    .then_some((registration, handler))
            })
    }
}

impl fmt::Debug for DeadlineRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineRegistration")
            .field("aggregate", &self.aggregate)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("rust_type", &self.rust_type)
            .finish_non_exhaustive()
    }
}

/// How an aggregate `A` decides on one type of due deadline: decode its
/// value and run its `#[deadline]` handler.
#[doc(hidden)]
pub struct DeadlineHandler<A: Aggregate> {
    pub(crate) decide: DecideDeadlineFn<A>,
}

/// The function a [`DeadlineHandler`] holds.
#[doc(hidden)]
pub type DecideDeadlineFn<A> = for<'a> fn(
    &'a A,
    &'a JsonPayload,
    &'a DeadlineContext<'a>,
    &'a <A as Aggregate>::Services,
) -> BoxFuture<
    'a,
    Result<Decision<<A as Aggregate>::Event>, CommandError<<A as Aggregate>::Error>>,
>;

impl<A: Aggregate> fmt::Debug for DeadlineHandler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineHandler")
            .field("aggregate", &A::NAME)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> DeadlineHandler<A> {
    #[doc(hidden)]
    pub const fn new(decide: DecideDeadlineFn<A>) -> Self {
        Self { decide }
    }
}

/// A domain, registered by `#[derive(Domain)]`.
#[derive(Debug)]
pub struct DomainRegistration {
    /// The marker type's name.
    pub name: &'static str,
    /// The module it covers, with its submodules.
    pub module: &'static str,
}

/// An event enum, registered by `#[derive(Event)]`.
#[derive(Debug)]
pub struct EventRegistration {
    /// The Rust path of the enum.
    pub rust_type: &'static str,
    /// Its variants' stored names and versions.
    pub types: &'static [EventType],
}

/// A free function marked `#[event_handler]`.
pub struct EventHandlerRegistration {
    /// The Rust path of the function, which names its processor.
    pub name: &'static str,
    /// The module it is declared in, which places it in a domain.
    pub module: &'static str,
    /// The stored name of the event it receives.
    pub event_name: &'static str,
    /// The Rust type of the event it receives.
    pub payload: &'static str,
    /// `#[event_handler(inline)]`: delivered right after the commit, in the
    /// committing process, at most once; otherwise from its own checkpoint,
    /// at least once.
    pub inline: bool,
    pub(crate) event_enum: fn() -> TypeId,
    pub(crate) decode: DecodeFn,
    pub(crate) call: HandlerFn,
}

impl EventHandlerRegistration {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        name: &'static str,
        module: &'static str,
        event_name: &'static str,
        payload: &'static str,
        inline: bool,
        event_enum: fn() -> TypeId,
        decode: DecodeFn,
        call: HandlerFn,
    ) -> Self {
        Self {
            name,
            module,
            event_name,
            payload,
            inline,
            event_enum,
            decode,
            call,
        }
    }

    /// The processor that delivers to a handler that is not inline.
    pub(crate) fn processor(&self) -> Box<dyn Processor> {
        Box::new(HandlerRunner::new(
            self.name,
            self.event_name,
            self.decode,
            self.call,
        ))
    }
}

impl fmt::Debug for EventHandlerRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHandlerRegistration")
            .field("name", &self.name)
            .field("event_name", &self.event_name)
            .field("payload", &self.payload)
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

/// A `#[projection]` or `#[process_manager]`.
pub struct ProcessorRegistration {
    /// Its name.
    pub name: &'static str,
    /// The module it is declared in, which places it in a domain.
    pub module: &'static str,
    /// Projection or process manager.
    pub kind: ProcessorKind,
    /// A projection's version (1 for a process manager).
    pub version: u32,
    build: fn() -> BuiltProcessor,
}

/// A processor made by a registration.
#[doc(hidden)]
pub struct BuiltProcessor(pub(crate) Box<dyn Processor>);

impl fmt::Debug for BuiltProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BuiltProcessor")
            .field(&self.0.name())
            .finish()
    }
}

impl BuiltProcessor {
    pub(crate) fn new(processor: impl Processor + 'static) -> Self {
        Self(Box::new(processor))
    }
}

impl ProcessorRegistration {
    #[doc(hidden)]
    pub const fn projection<P: Projection>(module: &'static str) -> Self {
        Self {
            name: P::NAME,
            module,
            kind: ProcessorKind::Projection,
            version: P::VERSION,
            build: || BuiltProcessor::new(ProjectionRunner::<P>::new()),
        }
    }

    #[doc(hidden)]
    pub const fn table_projection<P: TableProjection>(module: &'static str) -> Self {
        Self {
            name: P::NAME,
            module,
            kind: ProcessorKind::Projection,
            version: P::VERSION,
            build: || BuiltProcessor::new(TableProjectionRunner::<P>::new()),
        }
    }

    /// A registration made by the generated code, which names the runner.
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        module: &'static str,
        kind: ProcessorKind,
        build: fn() -> BuiltProcessor,
    ) -> Self {
        Self {
            name,
            module,
            kind,
            version: 1,
            build,
        }
    }

    pub(crate) fn build(&self) -> Box<dyn Processor> {
        (self.build)().0
    }
}

impl fmt::Debug for ProcessorRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorRegistration")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The innermost of `domains` whose module is `module` or contains it.
pub(crate) fn innermost(
    domains: &[&'static DomainRegistration],
    module: &str,
) -> Option<&'static DomainRegistration> {
    domains
        .iter()
        .copied()
        .filter(|domain| crate::domain::covers(domain.module, module))
        .max_by_key(|domain| domain.module.len())
}

/// A name or pattern that selects no registered aggregate or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{owner} selects {kind} `{name}`, which {}{}", kind.nothing(), Hint(closest.as_deref()))]
pub struct UnknownSelection {
    /// The gateway or consumer, as `gateway `name`` or `consumer `name``.
    pub owner: String,
    /// What the name was given as.
    pub kind: SelectionKind,
    /// The name or pattern as given.
    pub name: String,
    /// The known name (or routing key, for a pattern) closest to it.
    pub closest: Option<String>,
}

/// What an unknown selection was given as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectionKind {
    /// A stored aggregate type (`Gateway::aggregate_types`).
    AggregateType,
    /// A stored event name (`Gateway::events`).
    Event,
    /// A binding pattern over `<aggregate type>.<event name>` (`bind`).
    Binding,
}

impl SelectionKind {
    fn nothing(self) -> &'static str {
        match self {
            Self::AggregateType => "no registered aggregate is stored as",
            Self::Event => "no registered event is stored as",
            Self::Binding => "matches no `<aggregate type>.<event name>` of a registered event",
        }
    }
}

impl fmt::Display for SelectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AggregateType => "aggregate type",
            Self::Event => "event",
            Self::Binding => "binding",
        })
    }
}

/// `; did you mean `x`?`, or nothing.
struct Hint<'a>(Option<&'a str>);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(closest) => write!(f, "; did you mean `{closest}`?"),
            None => Ok(()),
        }
    }
}

inventory::collect!(AggregateRegistration);
inventory::collect!(DomainRegistration);
inventory::collect!(ProcessorRegistration);
inventory::collect!(EventRegistration);
inventory::collect!(EventHandlerRegistration);
inventory::collect!(DeadlineRegistration);

/// Everything the macros registered in this program, sorted by name.
///
/// # Examples
///
/// ```
/// use cqrs_core::registry::Registry;
///
/// let registry = Registry::global();
/// registry.check().expect("no duplicate names");
/// for aggregate in registry.aggregates() {
///     println!("{} is stored as {}", aggregate.rust_type, aggregate.name);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    aggregates: Vec<&'static AggregateRegistration>,
    domains: Vec<&'static DomainRegistration>,
    events: Vec<&'static EventRegistration>,
    event_handlers: Vec<&'static EventHandlerRegistration>,
    processors: Vec<&'static ProcessorRegistration>,
}

impl Registry {
    /// Collects the registrations of the whole program.
    pub fn global() -> Self {
        let mut aggregates: Vec<_> = inventory::iter::<AggregateRegistration>().collect();
        aggregates.sort_by_key(|a| (a.name, a.rust_type));
        let mut domains: Vec<_> = inventory::iter::<DomainRegistration>().collect();
        domains.sort_by_key(|d| (d.module, d.name));
        let mut events: Vec<_> = inventory::iter::<EventRegistration>().collect();
        events.sort_by_key(|e| e.rust_type);
        let mut event_handlers: Vec<_> = inventory::iter::<EventHandlerRegistration>().collect();
        event_handlers.sort_by_key(|h| (h.name, h.event_name));
        let mut processors: Vec<_> = inventory::iter::<ProcessorRegistration>().collect();
        processors.sort_by_key(|p| (p.name, p.version));
        Self {
            aggregates,
            domains,
            events,
            event_handlers,
            processors,
        }
    }

    /// The domains, by module.
    pub fn domains(&self) -> &[&'static DomainRegistration] {
        &self.domains
    }

    /// The aggregate types.
    pub fn aggregates(&self) -> &[&'static AggregateRegistration] {
        &self.aggregates
    }

    /// The event enums.
    pub fn events(&self) -> &[&'static EventRegistration] {
        &self.events
    }

    /// The `#[event_handler]` functions.
    pub fn event_handlers(&self) -> &[&'static EventHandlerRegistration] {
        &self.event_handlers
    }

    /// The `#[projection]` and `#[process_manager]` types (the event
    /// handlers that are not inline are processors too).
    pub fn processors(&self) -> &[&'static ProcessorRegistration] {
        &self.processors
    }

    /// Fails on the first of [`problems`](Self::problems).
    pub fn check(&self) -> Result<(), RegistryError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every pair of aggregates with one stored name, and every stored event
    /// name found in two event enums.
    pub fn problems(&self) -> Vec<RegistryError> {
        let mut problems = Vec::new();
        for pair in self.processors.windows(2) {
            if (pair[0].name, pair[0].version) == (pair[1].name, pair[1].version) {
                problems.push(RegistryError::DuplicateProcessor {
                    name: pair[0].name.to_owned(),
                });
            }
        }
        for pair in self.aggregates.windows(2) {
            if pair[0].name == pair[1].name {
                problems.push(RegistryError::DuplicateAggregate {
                    name: pair[0].name,
                    first: pair[0].rust_type,
                    second: pair[1].rust_type,
                });
            }
        }
        let mut owners: HashMap<&'static str, (&'static EventRegistration, &'static EventType)> =
            HashMap::new();
        for &registration in &self.events {
            for event_type in registration.types {
                match owners.get(event_type.name) {
                    Some(&(owner, first)) if owner.rust_type != registration.rust_type => {
                        problems.push(RegistryError::DuplicateEvent {
                            name: event_type.name,
                            first: format!("{}({})", owner.rust_type, first.payload),
                            second: format!("{}({})", registration.rust_type, event_type.payload),
                        });
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(event_type.name, (registration, event_type));
                    }
                }
            }
        }
        problems
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "aggregates:")?;
        for aggregate in &self.aggregates {
            writeln!(
                f,
                "  {} ({}): commands {}, events {}",
                aggregate.name, aggregate.rust_type, aggregate.command_type, aggregate.event_type
            )?;
        }
        writeln!(f, "events:")?;
        for registration in &self.events {
            for event_type in registration.types {
                writeln!(
                    f,
                    "  {}: {} in {}",
                    event_type, event_type.payload, registration.rust_type
                )?;
            }
        }
        writeln!(f, "processors:")?;
        for processor in &self.processors {
            writeln!(f, "  {} ({:?})", processor.name, processor.kind)?;
        }
        writeln!(f, "event handlers:")?;
        for handler in &self.event_handlers {
            writeln!(f, "  {} <- {}", handler.name, handler.event_name)?;
        }
        Ok(())
    }
}

/// The registry holds two things under one name, which the compiler could
/// not compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two aggregate types share one stored name.
    #[error(
        "aggregates `{first}` and `{second}` are both stored as `{name}`; give one a different #[aggregate(name = ..)]"
    )]
    DuplicateAggregate {
        /// The stored name.
        name: &'static str,
        /// One Rust type.
        first: &'static str,
        /// The other Rust type.
        second: &'static str,
    },

    /// Two processors (projections, process managers) of the app share a name.
    #[error("two processors are named `{name}`; each keeps its own checkpoint")]
    DuplicateProcessor {
        /// The name.
        name: String,
    },

    /// Two event enums record an event under one stored name.
    #[error(
        "events `{first}` and `{second}` are both stored as `{name}`; give one a different #[event(name = ..)]"
    )]
    DuplicateEvent {
        /// The stored name.
        name: &'static str,
        /// One variant, as `Enum::Variant(Type)`.
        first: String,
        /// The other variant.
        second: String,
    },
}
