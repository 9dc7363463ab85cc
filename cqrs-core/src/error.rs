//! Every error the runtime returns, as enums a caller can match on.

use uuid::Uuid;

use crate::boundary::InvalidTag;
use crate::middleware::Rejection;
use crate::store::{Conflict, StoreError};

/// Why `Cqrs::execute` did not record a command's events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate rejected the command.
    #[error(transparent)]
    Domain(E),

    /// The command needs an existing aggregate and the stream is empty.
    #[error("{aggregate_type} `{aggregate_id}` does not exist")]
    NotFound {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
        /// The id the command targeted.
        aggregate_id: String,
    },

    /// A `#[command_handler(create)]` command targeted an aggregate that has events.
    #[error("{aggregate_type} `{aggregate_id}` already exists at version {version}")]
    AlreadyExists {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
        /// The id the command targeted.
        aggregate_id: String,
        /// The aggregate's current version.
        version: u64,
    },

    /// An event field the stores index as a tag holds a value no tag can
    /// (a NUL character); nothing was recorded.
    #[error(transparent)]
    InvalidTag(#[from] InvalidTag),

    /// A decision's boundary kept changing: each time it decided, another
    /// writer recorded an event its query matches first, through every
    /// retry; nothing was recorded.
    #[error("decision `{decision}` gave up after {attempts} attempts: {changed}")]
    BoundaryChanged {
        /// The decision's stored name.
        decision: &'static str,
        /// The last change seen.
        changed: StoreError,
        /// How many times it was decided and appended.
        attempts: u32,
    },

    /// Other writers kept appending to the stream through every retry.
    #[error("gave up after {attempts} attempts: {conflict}")]
    Conflict {
        /// The last conflict seen.
        conflict: Conflict,
        /// How many times the command was decided and appended.
        attempts: u32,
    },

    /// The aggregate belongs to a domain the app does not host; nothing
    /// was loaded or recorded.
    #[error(
        "aggregate `{aggregate_type}` belongs to domain `{domain}`, which this app does not host: add `.host::<{domain}>()` to its `CqrsBuilder`"
    )]
    NotHosted {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
        /// The marker type of its domain.
        domain: &'static str,
    },

    /// The aggregate declares `#[aggregate(services = ..)]` and the app was built
    /// without them.
    #[error("aggregate {aggregate_type} needs services; pass them to `CqrsBuilder::services`")]
    MissingServices {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
    },

    /// A recorded event could not be decoded while loading the aggregate.
    #[error(transparent)]
    Decode(Box<DecodeError>),

    /// An event could not be serialized; nothing was recorded.
    #[error("event `{event_name}` could not be serialized")]
    Encode {
        /// The stored name of the event.
        event_name: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A deadline the decision schedules could not be serialized; nothing
    /// was recorded.
    #[error("deadline `{name}` could not be serialized")]
    EncodeDeadline {
        /// The deadline type's stored name.
        name: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A command or `#[deadline]` handler scheduled or cancelled a deadline
    /// `for_instance`: only a process manager's deadlines belong to an
    /// instance; an aggregate's belong to the aggregate. Nothing was
    /// recorded.
    #[error(
        "deadline `{name}` names an instance (for_instance), which only a process manager's deadlines have; an aggregate's belong to it"
    )]
    DeadlineInstance {
        /// The deadline type's stored name.
        name: &'static str,
    },

    /// A due deadline's stored value does not read as its type; its handler
    /// did not run.
    #[error("deadline `{name}` could not be read: {source}")]
    DecodeDeadline {
        /// The deadline type's stored name.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: PayloadError,
    },

    /// The command could not be serialized for the digest a command with a
    /// [`command_id`](crate::Metadata::command_id) records; nothing was recorded.
    #[error("command `{command}` could not be serialized")]
    EncodeCommand {
        /// The Rust name of the command type.
        command: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// The stream holds events of this command id, recorded by another
    /// command (another type, or the same type with another payload): the
    /// id was reused, so this command is neither run nor answered as a
    /// retry of the first.
    #[error(
        "command id {command_id} was used on {aggregate_type} `{aggregate_id}` by another command; {command} was not run"
    )]
    CommandIdReused {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
        /// The id the command targeted.
        aggregate_id: String,
        /// The reused [`Metadata::command_id`](crate::Metadata::command_id).
        command_id: Uuid,
        /// The Rust name of the command type that was refused.
        command: &'static str,
    },

    /// The event store failed.
    #[error(transparent)]
    Store(StoreError),

    /// A [`CommandLayer`](crate::middleware::CommandLayer) stopped the
    /// command before its aggregate was loaded; nothing was recorded.
    #[error("{command} rejected: {rejection}")]
    Rejected {
        /// The Rust name of the command type.
        command: &'static str,
        /// Why.
        rejection: Rejection,
    },
}

/// Why `Cqrs::load` could not rebuild an aggregate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The stream has no events.
    #[error("{aggregate_type} `{aggregate_id}` does not exist")]
    NotFound {
        /// The aggregate's stored name.
        aggregate_type: &'static str,
        /// The id that was asked for.
        aggregate_id: String,
    },

    /// A recorded event could not be decoded.
    #[error(transparent)]
    Decode(Box<DecodeError>),

    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a stored payload could not become an event, before knowing where it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// No variant of the event enum has this stored name.
    #[error("no event is stored as `{name}`")]
    UnknownName {
        /// The stored name.
        name: String,
    },

    /// The name is known but not at this version.
    #[error("no decoder for `{name}` version {version}; known versions: {known:?}")]
    UnknownVersion {
        /// The stored name.
        name: String,
        /// The stored version.
        version: u32,
        /// The versions the event enum can read.
        known: Vec<u32>,
    },

    /// The JSON does not match the Rust type.
    #[error("payload does not match `{rust_type}`: {source}")]
    Invalid {
        /// The Rust type the payload should decode into.
        rust_type: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
}

/// A recorded event that could not be decoded, with where it is in the log.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot decode event `{event_name}` v{event_version} at {aggregate_type} `{aggregate_id}` sequence {sequence}: {source}"
)]
pub struct DecodeError {
    /// The stream's aggregate type.
    pub aggregate_type: String,
    /// The stream's aggregate id.
    pub aggregate_id: String,
    /// The event's sequence in the stream.
    pub sequence: u64,
    /// The event's position in the global log.
    pub position: u64,
    /// The stored event name.
    pub event_name: String,
    /// The stored version.
    pub event_version: u32,
    /// What went wrong.
    #[source]
    pub source: PayloadError,
}

/// Why a broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached or the connection broke: the
    /// gateway and the consumer connect again with a backoff.
    #[error("{broker} is unavailable: {source}")]
    Unavailable {
        /// Which broker.
        broker: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The broker refused one message (a negative confirm): the gateway
    /// retries it by its retry policy, then parks it.
    #[error("{broker} refused message {id}: {reason}")]
    Refused {
        /// Which broker.
        broker: &'static str,
        /// The message's event id.
        id: uuid::Uuid,
        /// What the broker said.
        reason: String,
    },
    /// The broker refused the gateway's or consumer's setup, such as an
    /// exchange declared before with another type.
    #[error("{broker} refused the setup: {reason}")]
    Setup {
        /// Which broker.
        broker: &'static str,
        /// What the broker said.
        reason: String,
    },
}

impl BrokerError {
    /// Whether it may pass by itself, so the work is tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
