//! The traits the derive macros implement: [`Aggregate`], [`Command`], [`Event`].

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::boundary::{InvalidTag, Tag};
use crate::clock::Clock;
use crate::deadline::DeadlineChange;
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
pub trait Aggregate: Send + Sync + Sized + 'static {
    /// The aggregate type as stored in the log. It is kept forever: renaming the
    /// Rust type must not change it.
    const NAME: &'static str;

    /// The command enum, `#[derive(Command)]`. (Only what the app needs of
    /// it is required here: the derive's routing checks the rest, once.)
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

    /// The state of an aggregate with no events yet; the derive takes
    /// `Default::default()`.
    fn initial() -> Self;

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
    /// record, with the deadlines it schedules or cancels. A `#[command_handler(create)]` command fails with
    /// [`CommandError::AlreadyExists`] on an aggregate that has events
    /// (`context.version > 0`), any other with [`CommandError::NotFound`] on one
    /// that has none.
    fn handle<'a>(
        &'a self,
        command: Self::Command,
        context: &'a CommandContext<'a>,
        services: &'a Self::Services,
    ) -> impl Future<Output = Result<Decision<Self::Event>, CommandError<Self::Error>>> + Send + 'a;

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

    /// The wrapped command struct as JSON (`#[derive(Command)]` serializes
    /// it with serde). `Cqrs::execute` keeps a digest of it, with the name,
    /// beside the events of a command that carries a
    /// [`command_id`](Metadata::command_id), to tell a retry of that command
    /// from another command sent with the same id.
    fn encode(&self) -> Result<JsonPayload, serde_json::Error>;
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

    /// The tags the stores index this event by: its variant's
    /// `#[event(tags(..))]` fields, `field:value`. None by default.
    fn tags(&self) -> Result<Vec<Tag>, InvalidTag> {
        Ok(Vec::new())
    }
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

    /// The names of the fields it is tagged by (`#[event(tags(..))]`).
    const TAG_KEYS: &'static [&'static str] = &[];

    /// The payload, if `event` is the variant that wraps this type.
    fn from_event(event: &Self::Event) -> Option<&Self>;
}

/// What a handler decided: the events to record, in order, and the
/// changes to its aggregate's deadlines, recorded with them or not at all.
///
/// A `#[command_handler]` returns any value the macros turn into one (an
/// event, a `Vec`, `Option` or tuple of events, [`Schedule`](crate::Schedule)s
/// and [`Cancel`](crate::Cancel)s); an aggregate written by hand builds it.
#[derive(Debug)]
pub struct Decision<E> {
    /// The events, in order.
    pub events: Vec<E>,
    /// The deadlines scheduled and cancelled, applied in order.
    pub deadlines: Vec<DeadlineChange>,
}

impl<E> Decision<E> {
    /// A decision to record nothing.
    pub fn new() -> Self {
        Self {
            events: Vec::new(),
            deadlines: Vec::new(),
        }
    }

    /// Whether it records nothing: no event and no deadline change.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.deadlines.is_empty()
    }
}

impl<E> Default for Decision<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> From<Vec<E>> for Decision<E> {
    fn from(events: Vec<E>) -> Self {
        Self {
            events,
            deadlines: Vec::new(),
        }
    }
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
    /// The app's clock ([`CqrsBuilder::clock`](crate::CqrsBuilder::clock)).
    pub clock: &'a dyn Clock,
}

impl CommandContext<'_> {
    /// The time by the app's clock: what a handler decides with when time
    /// matters (a hold that expires, a trial that ends), so a test sets it
    /// with a [`TestClock`](crate::TestClock) instead of waiting.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
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
