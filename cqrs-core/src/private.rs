//! What the generated code uses. Not public API: no semver guarantees.

use std::any::TypeId;
use std::future::Future;

pub use inventory;
pub use serde_json;

pub use crate::aggregate::{
    Aggregate, Command, CommandContext, Decision, Event, EventPayload, EventType, IntoCommand,
};
pub use crate::app::{DeadlineOwner, ProcessContext, ProcessManager};
pub use crate::boundary::{InvalidTag, Tag};
pub use crate::deadline::{Deadline, DeadlineChange, DeadlineContext};
pub use crate::decision_model::{Applied, DecisionModel};
pub use crate::domain::Domain;
pub use crate::envelope::{Envelope, JsonPayload};
pub use crate::error::{CommandError, DecodeError, PayloadError};
pub use crate::future::BoxFuture;
pub use crate::handler::{HandlerError, HandlerFn, HandlerFuture, HandlerOutcome};
pub use crate::processor::{NamedProcessor, ProcessorKind};
pub use crate::registry::{
    AggregateRegistration, BuiltProcessor, DeadlineHandler, DeadlineRegistration,
    DomainRegistration, EventHandlerRegistration, EventRegistration, ProcessorRegistration,
};
pub use crate::routing::{
    ApplyEvent, Decided, HandleCommand, HandleDeadline, HandlerResult, IntoDecision,
    IntoDomainError, IntoEvent, Upcast, decision,
};
pub use crate::view::{
    Field, Index, IndexKey, IndexRegistration, Indexed, KeyError, KeyValue, Projection,
    TableMigrations, TableProjection, Tables, Views,
};

/// Links a command enum to the aggregate that names it in `#[aggregate(command = ..)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the command enum of any aggregate",
    label = "no aggregate handles `{Self}`",
    note = "name it on the aggregate that handles it: `#[aggregate(command = {Self}, ..)]`"
)]
pub trait CommandOwner {
    type Aggregate: Aggregate<Command = Self>;
}

/// Links an event enum to the aggregate that names it in `#[aggregate(event = ..)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the event enum of any aggregate or decision",
    label = "no aggregate or decision records `{Self}`",
    note = "name it on the aggregate or decision that records it: `#[aggregate(event = {Self}, ..)]` or `#[decision(event = {Self}, ..)]`"
)]
pub trait EventOwner {
    /// The aggregate, or the decision, whose `#[apply]` methods it goes to.
    type Aggregate;
}

/// Routes each variant of a command enum to its `#[command_handler]`;
/// implemented by `#[derive(Command)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command enum",
    label = "not a command enum",
    note = "add `#[derive(Command)]` to `{Self}`"
)]
pub trait Dispatch: Sized {
    /// `<Self as CommandOwner>::Aggregate`, named once so a missing owner is
    /// one error.
    type Aggregate: Aggregate<Command = Self>;

    fn dispatch<'a>(
        self,
        aggregate: &'a Self::Aggregate,
        context: &'a CommandContext<'a>,
        services: &'a <Self::Aggregate as Aggregate>::Services,
    ) -> impl Future<Output = DecideResult<Self::Aggregate>> + Send + 'a;
}

/// Routes each variant of an event enum to its `#[apply]`; implemented by
/// `#[derive(Event)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    label = "not an event enum",
    note = "add `#[derive(Event)]` to `{Self}`"
)]
pub trait ApplyTo {
    /// `<Self as EventOwner>::Aggregate`, named once.
    type Aggregate;

    fn apply_to(&self, aggregate: &mut Self::Aggregate);
}

/// What a `#[command_handler]` returns.
#[diagnostic::on_unimplemented(
    message = "a #[command_handler] must return `Result<_, _>`, not `{Self}`",
    label = "returns `{Self}`",
    note = "return `Result<E, Error>` where `E` is an event, the event enum, a `Vec`, array or `Option` of them, or `()`"
)]
pub trait CommandResult {
    type Ok;
    type Err;
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> CommandResult for Result<T, E> {
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// What deciding on a command returns.
pub type DecideResult<A> =
    Result<Decision<<A as Aggregate>::Event>, CommandError<<A as Aggregate>::Error>>;

/// The handler of `C` for this command, once the create/existing rule let
/// it through: a plain function, so a plain handler's decision comes back
/// without a future, and a missing handler is one error at the variant.
#[inline]
pub fn route<'a, A, C>(
    aggregate: &'a A,
    command: C,
    context: &'a CommandContext<'a>,
    services: &'a A::Services,
) -> Decided<impl Future<Output = HandlerResult<A>> + Send + 'a, DecideResult<A>>
where
    A: HandleCommand<C>,
{
    if A::CREATES && context.version > 0 {
        return Decided::Now(Err(CommandError::AlreadyExists {
            aggregate_type: A::NAME,
            aggregate_id: context.aggregate_id.to_owned(),
            version: context.version,
        }));
    }
    if !A::CREATES && context.version == 0 {
        return Decided::Now(Err(CommandError::NotFound {
            aggregate_type: A::NAME,
            aggregate_id: context.aggregate_id.to_owned(),
        }));
    }
    match aggregate.handle_command(command, context, services) {
        Decided::Now(decision) => Decided::Now(decision.map_err(CommandError::Domain)),
        Decided::Later(future) => Decided::Later(future),
    }
}

/// Calls the `#[apply]` of `E`.
pub fn apply<A: ApplyEvent<E>, E>(aggregate: &mut A, event: &E) {
    aggregate.apply_event(event);
}

/// Command enum `Self` wraps `C`: implemented by `#[derive(Command)]` for
/// each variant, and for every type when the enum is malformed (its error
/// is already reported). A `#[command_handler]` of any other type would
/// never run.
#[diagnostic::on_unimplemented(
    message = "`{C}` is not a command of `{Self}`, so this #[command_handler] never runs",
    label = "no variant of `{Self}` wraps `{C}`",
    note = "add a variant wrapping `{C}` to `{Self}`, or remove the handler"
)]
pub trait CommandVariant<C> {}

/// Names the command of a `#[command_handler]`, to check it is a variant
/// of the aggregate's command enum `E`.
pub fn handled_command<E: CommandVariant<C>, C>() {}

/// Event enum `Self` wraps `E`: implemented by `#[derive(Event)]` for each
/// variant, and for every type when the enum is malformed. An `#[apply]` of
/// any other type would never run.
#[diagnostic::on_unimplemented(
    message = "`{E}` is not an event of `{Self}`, so this #[apply] never runs",
    label = "no variant of `{Self}` wraps `{E}`",
    note = "add a variant wrapping `{E}` to `{Self}`, or remove the method"
)]
pub trait EventVariant<E> {}

/// Names the event of an `#[apply]`, to check it is a variant of the
/// aggregate's event enum `V`.
pub fn applied_event<V: EventVariant<E>, E>() {}

/// Aggregate `Self` returns `Schedule<D>` from one of its handlers:
/// implemented by `#[aggregate_impl]` for each type a handler's return
/// type schedules. A `#[deadline]` handler of any other type never runs.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` never schedules `{D}`, so this #[deadline] handler never runs",
    label = "no handler of `{Self}` returns `Schedule<{D}>`",
    note = "return `Schedule<{D}>` from a #[command_handler] or #[deadline] handler of `{Self}`, written out in its return type (the macro does not see through a type alias), or remove this one"
)]
pub trait Schedules<D> {}

/// Names the deadline of a `#[deadline]` handler, to check its aggregate
/// schedules it.
pub fn deadline_scheduled<A: Schedules<D>, D>() {}

/// Aggregate `Self` schedules `D`, checked where a handler cancels `D`:
/// implemented with [`Schedules`], and read apart for its message.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` never schedules `{D}`, so cancelling it does nothing",
    label = "no handler of `{Self}` returns `Schedule<{D}>`",
    note = "return `Schedule<{D}>` from a handler of `{Self}`, or remove this `Cancel`"
)]
pub trait Cancels<D> {}

/// Names a `Cancel<D>` a handler returns, to check its aggregate schedules `D`.
pub fn deadline_cancelled<A: Cancels<D>, D>() {}

/// Names a `Schedule<D>` a handler returns, to check its aggregate has a
/// `#[deadline]` handler for `D`.
pub fn deadline_handled<A: HandleDeadline<D>, D>() {}

/// Decides on a due deadline of type `D`: decodes its stored value and
/// runs the aggregate's `#[deadline]` handler, for the handler table of
/// [`DeadlineRegistration`].
pub fn decide_deadline<'a, A, D>(
    aggregate: &'a A,
    value: &'a JsonPayload,
    context: &'a DeadlineContext<'a>,
    services: &'a A::Services,
) -> BoxFuture<'a, DecideResult<A>>
where
    A: HandleDeadline<D>,
    D: Deadline,
{
    let deadline = match value.decode::<D>() {
        Ok(deadline) => deadline,
        Err(source) => {
            let error = CommandError::DecodeDeadline {
                name: D::NAME,
                source: PayloadError::Invalid {
                    rust_type: std::any::type_name::<D>(),
                    source,
                },
            };
            return Box::pin(std::future::ready(Err(error)));
        }
    };
    match aggregate.handle_deadline(deadline, context, services) {
        Decided::Now(decision) => {
            Box::pin(std::future::ready(decision.map_err(CommandError::Domain)))
        }
        Decided::Later(future) => {
            Box::pin(async move { future.await.map_err(CommandError::Domain) })
        }
    }
}

/// The state of an aggregate before its first event.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` needs a `Default` state: the state before its first event",
    label = "`{Self}` does not implement `Default`",
    note = "add `#[derive(Default)]` to `{Self}`, or implement `Default` for it by hand"
)]
pub trait InitialState {
    fn initial() -> Self;
}

#[diagnostic::do_not_recommend]
impl<T: Default> InitialState for T {
    #[inline]
    fn initial() -> Self {
        T::default()
    }
}

/// The state of an aggregate with `#[aggregate(snapshot_every = ..)]`.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` takes snapshots, so its state must implement `Serialize` and `Deserialize`",
    label = "snapshots need a serializable state",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`, and `#[serde(skip)]` to fields a snapshot should not keep"
)]
pub trait SnapshotState: Sized {
    fn to_snapshot(&self) -> Result<JsonPayload, serde_json::Error>;
    fn from_snapshot(state: &JsonPayload) -> Result<Self, serde_json::Error>;
}

#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned> SnapshotState for T {
    fn to_snapshot(&self) -> Result<JsonPayload, serde_json::Error> {
        JsonPayload::encode(self)
    }

    fn from_snapshot(state: &JsonPayload) -> Result<Self, serde_json::Error> {
        state.decode()
    }
}

/// Converts an old payload into the current one.
pub fn upcast<Old: Upcast<New>, New>(old: Old) -> New {
    old.upcast()
}

/// Deserializes one variant's payload.
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    payload: &JsonPayload,
    rust_type: &'static str,
) -> Result<T, PayloadError> {
    payload
        .decode()
        .map_err(|source| PayloadError::Invalid { rust_type, source })
}

/// The error for a stored name and version no variant matches.
pub fn unknown_event(name: &str, version: u32, types: &[EventType]) -> PayloadError {
    let known: Vec<u32> = types
        .iter()
        .filter(|event_type| event_type.name == name)
        .flat_map(|event_type| {
            event_type
                .upcasts
                .iter()
                .copied()
                .chain([event_type.version])
        })
        .collect();
    if known.is_empty() {
        PayloadError::UnknownName {
            name: name.to_owned(),
        }
    } else {
        PayloadError::UnknownVersion {
            name: name.to_owned(),
            version,
            known,
        }
    }
}

/// `TypeId::of` as a function pointer a `static` can hold.
pub fn type_id<T: 'static>() -> TypeId {
    TypeId::of::<T>()
}

/// Stands in for a type a failed derive could not read, so the error it
/// reported is not followed by more.
#[derive(Debug, Clone, Copy)]
pub enum Unknown {}

impl std::fmt::Display for Unknown {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Unknown {}

// What a malformed aggregate stands in with is never checked again.
impl<C> CommandVariant<C> for Unknown {}
impl<E> EventVariant<E> for Unknown {}

impl Command for Unknown {
    fn name(&self) -> &'static str {
        match *self {}
    }

    fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        match *self {}
    }
}

impl Event for Unknown {
    const TYPES: &'static [EventType] = &[];

    fn event_type(&self) -> &'static EventType {
        match *self {}
    }

    fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        match *self {}
    }

    fn decode(name: &str, version: u32, _: &JsonPayload) -> Result<Self, PayloadError> {
        Err(unknown_event(name, version, Self::TYPES))
    }
}

// A payload returned by a handler of an aggregate whose `event = ..` key is
// missing is not reported again. Never called: the program did not compile.
impl<P: EventPayload> IntoDecision<Unknown> for P {
    fn into_decision(self, _: &mut Decision<Unknown>) {}
}

/// The stored names and versions of the events of aggregate `A`, for its
/// registration.
pub fn event_types<A: Aggregate>() -> &'static [EventType] {
    <A::Event as Event>::TYPES
}

/// Decodes an event of the log for a projection or process manager.
pub fn decode_event<E: Event>(envelope: &Envelope) -> Result<E, HandlerError> {
    crate::app::decode(envelope).map_err(|error| error as HandlerError)
}

/// Decodes an event of the log into the `Envelope<E>` a free
/// `#[event_handler]` of the event enum `E` takes.
pub fn decode_envelope<E: Event>(
    envelope: &Envelope,
) -> Result<Box<dyn std::any::Any + Send + Sync>, Box<DecodeError>> {
    let event = crate::app::decode::<E>(envelope)?;
    Ok(Box::new(envelope.clone().with_payload(event)))
}

/// The outcome of a projection or process manager handler.
pub fn processor_outcome(outcome: impl HandlerOutcome) -> Result<(), HandlerError> {
    outcome.into_outcome()
}

/// What a process manager's handler may return: nothing, `Result<T, E>`
/// where `E` is an error (or a `String`), or the deadlines it schedules
/// and cancels, bare or as `T`.
#[diagnostic::on_unimplemented(
    message = "a process manager's handler cannot return `{Self}`",
    label = "returns `{Self}`",
    note = "return nothing, `Result<(), E>` where `E` implements `std::error::Error + Send + Sync` or is a `String`, or the deadlines it schedules and cancels: `Schedule<T>`, `Cancel<T>`, or tuples, `Vec`s and `Option`s of them, bare or in the `Result`"
)]
pub trait ProcessHandlerOutcome {
    /// The deadline changes, or the failure.
    fn into_changes(self) -> Result<Vec<DeadlineChange>, HandlerError>;
}

impl<T: IntoDecision<std::convert::Infallible>> ProcessHandlerOutcome for T {
    fn into_changes(self) -> Result<Vec<DeadlineChange>, HandlerError> {
        Ok(decision(self).deadlines)
    }
}

impl<T: IntoDecision<std::convert::Infallible>, E: Into<HandlerError>> ProcessHandlerOutcome
    for Result<T, E>
{
    fn into_changes(self) -> Result<Vec<DeadlineChange>, HandlerError> {
        self.map(|value| decision(value).deadlines)
            .map_err(Into::into)
    }
}

/// The outcome of a process manager's handler: the deadlines it
/// schedules and cancels.
pub fn process_outcome(
    outcome: impl ProcessHandlerOutcome,
) -> Result<Vec<DeadlineChange>, HandlerError> {
    outcome.into_changes()
}

/// Decodes a process manager's due deadline of type `D` from the envelope
/// its `#[deadline]` handler is called with.
pub fn decode_process_deadline<D: Deadline>(envelope: &Envelope) -> Result<D, HandlerError> {
    if envelope.event_version != D::VERSION {
        return Err(format!(
            "deadline `{}` was scheduled at version {}; its handler reads version {}",
            D::NAME,
            envelope.event_version,
            D::VERSION
        )
        .into());
    }
    envelope.payload.decode::<D>().map_err(|source| {
        Box::new(CommandError::<std::convert::Infallible>::DecodeDeadline {
            name: D::NAME,
            source: PayloadError::Invalid {
                rust_type: std::any::type_name::<D>(),
                source,
            },
        }) as HandlerError
    })
}

/// A process manager's deadline that none of its `#[deadline]` handlers
/// takes (a redeploy removed it).
pub fn no_deadline_handler(manager: &str, name: &str) -> HandlerError {
    format!("process manager {manager} has no #[deadline] handler for `{name}`").into()
}

/// Process manager `Self` returns `Schedule<D>` from one of its handlers:
/// implemented by `#[process_manager]` for each type a handler's return
/// type schedules. A `#[deadline]` handler of any other type never runs.
#[diagnostic::on_unimplemented(
    message = "process manager `{Self}` never schedules `{D}`, so this #[deadline] handler never runs",
    label = "no handler of `{Self}` returns `Schedule<{D}>`",
    note = "return `Schedule<{D}>` from an #[event_handler] or #[deadline] handler of `{Self}`, written out in its return type (the macro does not see through a type alias), or remove this one"
)]
pub trait ProcessSchedules<D> {}

/// Names the deadline of a process manager's `#[deadline]` handler, to
/// check the manager schedules it.
pub fn process_deadline_scheduled<M: ProcessSchedules<D>, D>() {}

/// Process manager `Self` schedules `D`, checked where a handler cancels
/// `D`: implemented with [`ProcessSchedules`], and read apart for its
/// message.
#[diagnostic::on_unimplemented(
    message = "process manager `{Self}` never schedules `{D}`, so cancelling it does nothing",
    label = "no handler of `{Self}` returns `Schedule<{D}>`",
    note = "return `Schedule<{D}>` from a handler of `{Self}`, or remove this `Cancel`"
)]
pub trait ProcessCancels<D> {}

/// Names a `Cancel<D>` a process manager's handler returns, to check the
/// manager schedules `D`.
pub fn process_deadline_cancelled<M: ProcessCancels<D>, D>() {}

/// Process manager `Self` has a `#[deadline]` handler for `D`.
#[diagnostic::on_unimplemented(
    message = "process manager `{Self}` schedules `{D}` but has no #[deadline] handler for it",
    label = "no #[deadline] takes `{D}`",
    note = "add `#[deadline] async fn ..(&self, deadline: {D}, context: &ProcessContext<'_>) -> Result<(), E>` to the #[process_manager] block of `{Self}`"
)]
pub trait ProcessHandlesDeadline<D> {}

/// Names a `Schedule<D>` a process manager's handler returns, to check the
/// manager has a `#[deadline]` handler for `D`.
pub fn process_deadline_handled<M: ProcessHandlesDeadline<D>, D>() {}

/// The runner of process manager `M`, for its registration.
pub fn process_manager_runner<M: ProcessManager + Default>() -> BuiltProcessor {
    BuiltProcessor::new(crate::app::ProcessManagerRunner::new(M::default()))
}

/// The tag `key:value` of an event's or a decision's `#[tag]` field.
pub fn tag(key: &str, value: &impl std::fmt::Display) -> Result<Tag, InvalidTag> {
    Tag::new(key, value)
}

/// What `#[decision_impl]` implements: a decision's handlers, which its
/// `DecisionModel` impl (from `#[derive(DecisionModel)]`) calls.
#[diagnostic::on_unimplemented(
    message = "decision `{Self}` has no #[decision_impl] block",
    label = "its #[command_handler] and #[apply] methods are not found",
    note = "add `#[decision_impl]` to the `impl {Self} {{ .. }}` block that holds them"
)]
pub trait DecisionHandlers: DecisionModel {
    const APPLIES: &'static [Applied];

    fn apply_recorded(&mut self, envelope: &Envelope) -> Result<(), PayloadError>;

    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        command: <Self as DecisionModel>::Command,
    ) -> Result<Decision<<Self as DecisionModel>::Event>, <Self as DecisionModel>::Error>;
}

/// Whether any of `carried` is among `wanted`: an applied event carries a
/// tag of the decision, so its query can select it.
pub const fn carries_a_tag(carried: &[&str], wanted: &[&str]) -> bool {
    let mut i = 0;
    while i < carried.len() {
        let mut j = 0;
        while j < wanted.len() {
            if same_text(carried[i], wanted[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
