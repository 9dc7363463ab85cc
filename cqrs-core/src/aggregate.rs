//! The traits the derive macros implement: [`Aggregate`], [`Command`], [`Event`].

use std::fmt;
use std::future::Future;

use crate::envelope::{JsonPayload, Metadata};
use crate::error::{CommandError, PayloadError};

/// A consistency boundary that decides on commands and changes only through events.
///
/// Implemented by `#[derive(Aggregate)]` together with an `#[aggregate_impl]` block;
/// writing it by hand is possible but loses the compile-time coverage checks.
///
/// # Examples
///
/// ```
/// use cqrs_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct Register { pub name: String }
///
/// #[derive(Debug, Clone, Command)]
/// pub enum UserCommand { Register(Register) }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// pub struct Registered { pub name: String }
///
/// #[derive(Debug, Clone, PartialEq, Event)]
/// pub enum UserEvent { Registered(Registered) }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("never")]
/// pub struct UserError;
///
/// #[derive(Debug, Default, Aggregate)]
/// #[aggregate(name = "user", command = UserCommand, event = UserEvent, error = UserError)]
/// pub struct User { name: Option<String> }
///
/// #[aggregate_impl]
/// impl User {
///     #[command_handler(create)]
///     fn register(&self, command: Register) -> Result<Registered, UserError> {
///         Ok(Registered { name: command.name })
///     }
///
///     #[apply]
///     fn registered(&mut self, event: &Registered) {
///         self.name = Some(event.name.clone());
///     }
/// }
///
/// assert_eq!(<User as Aggregate>::NAME, "user");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    label = "not an aggregate",
    note = "add `#[derive(Aggregate)]` and `#[aggregate(name = \"..\", command = .., event = .., error = ..)]` to `{Self}`"
)]
pub trait Aggregate: Default + Send + Sync + Sized + 'static {
    /// The aggregate type as stored in the log. It is kept forever: renaming the
    /// Rust type must not change it.
    const NAME: &'static str;

    /// The command enum, `#[derive(Command)]`.
    type Command: Command;

    /// The event enum, `#[derive(Event)]`.
    type Event: Event;

    /// What a command handler returns when it rejects a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Dependencies command handlers may ask for (`#[aggregate(services = T)]`),
    /// `()` when none are declared.
    type Services: Send + Sync + 'static;

    /// Take a snapshot every this many events (`#[aggregate(snapshot_every = N)]`);
    /// 0 for never.
    const SNAPSHOT_EVERY: u64 = 0;

    /// The shape of the snapshotted state (`#[aggregate(snapshot_version = V)]`).
    /// Raising it makes older snapshots be ignored.
    const SNAPSHOT_VERSION: u32 = 1;

    /// The state serialized for a snapshot; `None` when snapshots are off.
    fn to_snapshot(&self) -> Option<Result<JsonPayload, serde_json::Error>> {
        None
    }

    /// The state read back from a snapshot; `None` when snapshots are off.
    fn from_snapshot(state: &JsonPayload) -> Option<Result<Self, serde_json::Error>> {
        let _ = state;
        None
    }

    /// Decides on `command` against the current state and returns the events to
    /// record. A `#[command_handler(create)]` command fails with
    /// [`CommandError::AlreadyExists`] on an aggregate that has events
    /// (`context.version > 0`), any other with [`CommandError::NotFound`] on one
    /// that has none.
    fn handle<'a>(
        &'a self,
        command: Self::Command,
        context: &'a CommandContext<'a>,
        services: &'a Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, CommandError<Self::Error>>> + Send + 'a;

    /// Applies one recorded event. Events are facts: applying cannot fail.
    fn apply(&mut self, event: &Self::Event);
}

/// The enum of every command an aggregate accepts, `#[derive(Command)]`.
///
/// Each variant wraps exactly one command struct, and `execute` accepts either
/// the enum or any of those structs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command enum",
    label = "not a command enum",
    note = "add `#[derive(Command)]` to `{Self}`, an enum whose variants each wrap one command type"
)]
pub trait Command: Clone + Send + 'static {
    /// The Rust name of the command type this value wraps, for logs and traces.
    fn name(&self) -> &'static str;
}

/// The enum of every event an aggregate records, `#[derive(Event)]`.
///
/// Each variant wraps one event struct, stored under a name and version
/// (`#[event(name = "..", version = N)]`, default: the struct's name, version 1).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    label = "not an event enum",
    note = "add `#[derive(Event)]` to `{Self}`, an enum whose variants each wrap one event type"
)]
pub trait Event: Send + Sync + Sized + 'static {
    /// Every stored name and version this enum holds, in variant order.
    const TYPES: &'static [EventType];

    /// The stored name and version of this event.
    fn event_type(&self) -> &'static EventType;

    /// Serializes the wrapped struct, the form kept in the log.
    fn encode(&self) -> Result<JsonPayload, serde_json::Error>;

    /// Rebuilds an event from its stored name, version and payload.
    fn decode(name: &str, version: u32, payload: &JsonPayload) -> Result<Self, PayloadError>;
}

/// One variant of an event enum as the log knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The stored name, kept forever.
    pub name: &'static str,
    /// The schema version of the payload.
    pub version: u32,
    /// The Rust type the variant wraps, as written in the enum.
    pub payload: &'static str,
    /// Older versions it reads through `#[event(upcast(..))]`.
    pub upcasts: &'static [u32],
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// A struct wrapped by one variant of an event enum; implemented by `#[derive(Event)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not wrapped by a `#[derive(Event)]` enum",
    note = "add a variant wrapping `{Self}` to the event enum of the aggregate that records it"
)]
pub trait EventPayload: Send + Sync + Sized + 'static {
    /// The event enum with the variant that wraps this type.
    type Event: Event;

    /// The stored name.
    const NAME: &'static str;

    /// The schema version.
    const VERSION: u32;

    /// The payload, if `event` is the variant that wraps this type.
    fn from_event(event: &Self::Event) -> Option<&Self>;
}

/// Metadata a command handler may ask for by taking `context: &CommandContext`.
#[derive(Debug, Clone, Copy)]
pub struct CommandContext<'a> {
    /// The id of the aggregate the command targets.
    pub aggregate_id: &'a str,
    /// The aggregate's version before this command: the number of events it has.
    pub version: u64,
    /// The metadata the command was sent with; recorded on every event it produces.
    pub metadata: &'a Metadata,
}

/// A command struct or command enum that `Cqrs::execute` can route by its type alone.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command of any aggregate",
    label = "not a command",
    note = "wrap `{Self}` in a variant of a `#[derive(Command)]` enum that an aggregate names in `#[aggregate(command = ..)]`"
)]
pub trait IntoCommand: Send + 'static {
    /// The aggregate that handles this command.
    type Aggregate: Aggregate;

    /// Wraps the command in its aggregate's command enum.
    fn into_command(self) -> <Self::Aggregate as Aggregate>::Command;
}

/// The handler of command `C` on an aggregate; implemented by `#[aggregate_impl]`
/// for each `#[command_handler]` method.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no #[command_handler] for `{C}`",
    label = "no #[command_handler] takes `{C}`",
    note = "add `#[command_handler] fn ..(&self, command: {C}) -> Result<.., ..>` to the `#[aggregate_impl]` block of `{Self}`"
)]
pub trait HandleCommand<C>: Aggregate {
    /// True for `#[command_handler(create)]`.
    const CREATES: bool;

    /// Runs the handler and converts what it returns into events: at once
    /// for a plain `fn`, in the returned future for an `async fn`.
    fn handle_command<'a>(
        &'a self,
        command: C,
        context: &'a CommandContext<'a>,
        services: &'a Self::Services,
    ) -> Decided<impl Future<Output = Decision<Self>> + Send + 'a, Decision<Self>>;
}

/// What a command handler decides: the aggregate's events, or its error.
pub type Decision<A> = Result<Vec<<A as Aggregate>::Event>, <A as Aggregate>::Error>;

/// A command handler's decision: made already (a plain `fn` handler), or
/// made by a future (an `async fn` handler). A plain handler's decision is
/// not wrapped in a future, so routing to it costs what a hand-written
/// `match` costs.
#[derive(Debug)]
pub enum Decided<F, T> {
    /// The decision.
    Now(T),
    /// The future that makes it.
    Later(F),
}

/// The handler of event `E` on an aggregate; implemented by `#[aggregate_impl]`
/// for each `#[apply]` method.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no #[apply] handler for `{E}`",
    label = "no #[apply] takes `{E}`",
    note = "add `#[apply] fn ..(&mut self, event: &{E})` to the `#[aggregate_impl]` block of `{Self}`"
)]
pub trait ApplyEvent<E> {
    /// Changes the state by one event.
    fn apply_event(&mut self, event: &E);
}

/// What a command handler may return on success: one event, the event enum,
/// a `Vec`, array or `Option` of either, or `()` for no events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event of `{E}`, so a command handler cannot return it",
    label = "returns `{Self}`",
    note = "return an event struct wrapped by a variant of `{E}`, `{E}` itself, a `Vec`, array or `Option` of them, or `()`"
)]
pub trait IntoEvents<E> {
    /// The events, in order.
    fn into_events(self) -> Vec<E>;
}

/// One event struct or the event enum `E`; implemented by `#[derive(Event)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event of `{E}`",
    label = "not an event of `{E}`",
    note = "add a variant wrapping `{Self}` to the event enum `{E}`"
)]
pub trait IntoEvent<E> {
    /// Wraps the value in the event enum.
    fn into_event(self) -> E;
}

impl<E: Event> IntoEvent<E> for E {
    #[inline]
    fn into_event(self) -> E {
        self
    }
}

impl<E: Event> IntoEvents<E> for E {
    #[inline]
    fn into_events(self) -> Vec<E> {
        vec![self]
    }
}

impl<E> IntoEvents<E> for () {
    #[inline]
    fn into_events(self) -> Vec<E> {
        Vec::new()
    }
}

impl<E, T: IntoEvent<E>> IntoEvents<E> for Vec<T> {
    #[inline]
    fn into_events(self) -> Vec<E> {
        self.into_iter().map(IntoEvent::into_event).collect()
    }
}

impl<E, T: IntoEvent<E>, const N: usize> IntoEvents<E> for [T; N] {
    #[inline]
    fn into_events(self) -> Vec<E> {
        self.into_iter().map(IntoEvent::into_event).collect()
    }
}

impl<E, T: IntoEvent<E>> IntoEvents<E> for Option<T> {
    #[inline]
    fn into_events(self) -> Vec<E> {
        self.into_iter().map(IntoEvent::into_event).collect()
    }
}

/// An error a command handler returns, converted into the aggregate's error.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` does not convert into the aggregate error `{T}`",
    label = "`{T}` has no `From<{Self}>`",
    note = "implement `From<{Self}> for {T}` (with thiserror: a variant marked `#[from]`), or return `{T}`"
)]
pub trait IntoDomainError<T> {
    /// Converts the error.
    fn into_domain_error(self) -> T;
}

/// An older version of an event's payload that converts into the current one;
/// `#[event(upcast(1 = Old))]` needs it for `Old`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be upcast into `{T}`",
    label = "no `From<{Self}>` for `{T}`",
    note = "implement `From<{Self}> for {T}`: how a stored `{Self}` reads as the current event"
)]
pub trait Upcast<T> {
    /// Converts the old payload.
    fn upcast(self) -> T;
}

#[diagnostic::do_not_recommend]
impl<T, U: Into<T>> Upcast<T> for U {
    fn upcast(self) -> T {
        self.into()
    }
}

#[diagnostic::do_not_recommend]
impl<T, E: Into<T>> IntoDomainError<T> for E {
    #[inline]
    fn into_domain_error(self) -> T {
        self.into()
    }
}
