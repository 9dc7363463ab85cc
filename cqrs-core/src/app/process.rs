//! Process managers: [`ProcessManager`], the [`ProcessContext`] their
//! handlers send commands through, and the runner that follows the log for
//! them (their deadlines: `process_deadlines`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use super::{Committed, Cqrs, Inner, Reuse};
use crate::aggregate::Command;
use crate::aggregate::{Aggregate, IntoCommand};
use crate::deadline::{DeadlineChange, DeadlineContext};
use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::error::{CommandError, LoadError};
use crate::future::BoxFuture;
use crate::handler::HandlerError;
use crate::processor::delivery::Deliver;
use crate::processor::{ProcessorError, ProcessorKind, StepEnv};

/// Reacts to events by sending commands to aggregates. Implemented by
/// `#[process_manager(name = "..")]` on an impl block with one
/// `#[event_handler]` per event it reacts to.
///
/// It follows the global log from a checkpoint like a projection. Its
/// commands carry a command id derived from the triggering event, so after a
/// crash the events since the checkpoint are handled again but no command
/// runs twice.
///
/// Its handlers may also schedule and cancel deadlines, returning
/// [`Schedule`](crate::Schedule) and [`Cancel`](crate::Cancel) as an
/// aggregate's do; a deadline belongs to an instance (the id of the stream
/// whose event scheduled it, or [`Schedule::for_instance`](crate::Schedule::for_instance)),
/// and when it falls due its `#[deadline]` handler runs with a
/// [`ProcessContext`] like an event handler's.
pub trait ProcessManager: Send + Sync + 'static {
    /// The name, which keys its checkpoint and its command ids.
    const NAME: &'static str;

    /// How many segments it has: instances share them, one stream's events
    /// all go to one (`#[process_manager(segments = N)]`, default 1).
    const SEGMENTS: u32 = 1;

    /// Whether it reacts to events stored under `event_name`.
    fn handles(event_name: &str) -> bool;

    /// Reacts to one event of the log; what it returns are the deadlines
    /// it schedules and cancels.
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        context: &'a ProcessContext<'a>,
    ) -> BoxFuture<'a, Result<Vec<DeadlineChange>, HandlerError>>;

    /// Reacts to one of its deadlines, now due, with its `#[deadline]`
    /// handler; what it returns are the deadlines it schedules and
    /// cancels. `context.event()` is the deadline as an envelope: its
    /// `event_id` is the deadline's id, its name the deadline's, its
    /// payload the deadline's value.
    fn handle_deadline<'a>(
        &'a self,
        deadline: &'a DeadlineContext<'a>,
        context: &'a ProcessContext<'a>,
    ) -> BoxFuture<'a, Result<Vec<DeadlineChange>, HandlerError>> {
        let _ = deadline;
        let name = context.event().event_name.clone();
        Box::pin(std::future::ready(Err(format!(
            "process manager {} has no #[deadline] handler for `{name}`",
            Self::NAME
        )
        .into())))
    }
}

/// What a process manager's handler sends commands through. Each command
/// carries the triggering event's correlation id, the event's id as causation
/// id, and a command id that makes it run once however often the event is
/// handled.
pub struct ProcessContext<'a> {
    app: &'a Cqrs,
    manager: &'static str,
    event: &'a Envelope,
    sent: AtomicU32,
    /// Where a [`ProcessFixture`](crate::testing::ProcessFixture) keeps
    /// the commands sent.
    recorder: Option<&'a Mutex<Vec<SentCommand>>>,
}

/// A command a process manager's handler sent, as a
/// [`ProcessFixture`](crate::testing::ProcessFixture) records it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentCommand {
    /// The aggregate type it was sent to.
    pub aggregate_type: &'static str,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The Rust name of the command type.
    pub name: &'static str,
    /// The command as JSON, or why it would not serialize.
    pub payload: Result<JsonPayload, String>,
}

impl<'a> ProcessContext<'a> {
    pub(crate) fn new(
        app: &'a Cqrs,
        manager: &'static str,
        event: &'a Envelope,
        recorder: Option<&'a Mutex<Vec<SentCommand>>>,
    ) -> Self {
        Self {
            app,
            manager,
            event,
            sent: AtomicU32::new(0),
            recorder,
        }
    }

    /// The event being handled; in a `#[deadline]` handler, the deadline
    /// (see [`ProcessManager::handle_deadline`]).
    pub fn event(&self) -> &'a Envelope {
        self.event
    }

    /// The current state of an aggregate, replayed from the store, to read
    /// facts the event does not carry.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<A, LoadError> {
        self.app.load(aggregate_id).await
    }

    /// The app, for what the context does not offer (its views, say).
    pub fn app(&self) -> &'a Cqrs {
        self.app
    }

    /// Runs a command, like [`Cqrs::execute`], with the metadata above.
    /// A command this handler already sent for this event (before a restart)
    /// returns with [`Committed::duplicate`] set and is not run again: its
    /// id is derived from the event and the order of the handler's
    /// commands, and a repeat answers the first outcome even if the handler
    /// decided on another command this time (no digest is kept for it).
    pub async fn execute<C: IntoCommand>(
        &self,
        aggregate_id: &str,
        command: C,
    ) -> Result<
        Committed<<C::Aggregate as Aggregate>::Event>,
        CommandError<<C::Aggregate as Aggregate>::Error>,
    > {
        let ordinal = self.sent.fetch_add(1, Ordering::SeqCst);
        let metadata = Metadata {
            correlation_id: Some(
                self.event
                    .metadata
                    .correlation_id
                    .unwrap_or(self.event.event_id),
            ),
            causation_id: Some(self.event.event_id),
            command_id: Some(derived_id(
                self.manager,
                self.event.event_id,
                ordinal,
                Derived::Command,
            )),
            command_digest: None,
            values: self.event.metadata.values.clone(),
        };
        let command = Converted::<C::Aggregate>(command.into_command());
        if let Some(recorder) = self.recorder {
            let command = &command.0;
            let sent = SentCommand {
                aggregate_type: <C::Aggregate as Aggregate>::NAME,
                aggregate_id: aggregate_id.to_owned(),
                name: command.name(),
                payload: command.encode().map_err(|error| error.to_string()),
            };
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sent);
        }
        self.app
            .send(aggregate_id, command, metadata, Reuse::Answered)
            .await
    }
}

impl std::fmt::Debug for ProcessContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessContext")
            .field("manager", &self.manager)
            .field("event_id", &self.event.event_id)
            .finish_non_exhaustive()
    }
}

/// A command already wrapped in its aggregate's command enum.
struct Converted<A: Aggregate>(A::Command);

impl<A: Aggregate> IntoCommand for Converted<A> {
    type Aggregate = A;

    fn into_command(self) -> A::Command {
        self.0
    }
}

/// What a process manager derives an id for.
#[derive(Clone, Copy)]
pub(super) enum Derived {
    /// A command it sends.
    Command = 0,
    /// A deadline it schedules.
    Deadline = 1,
}

/// The id of the `ordinal`-th command `manager` sends (or deadline it
/// schedules) for one event or deadline: the same every time it is handled
/// (UUIDv8 of two FNV-1a hashes).
pub(super) fn derived_id(manager: &str, event_id: Uuid, ordinal: u32, what: Derived) -> Uuid {
    let hash = |seed: u64| {
        let mut hash = seed;
        // A command's bytes are as they were before deadlines, so ids
        // already recorded still answer duplicates.
        let marker = match what {
            Derived::Command => None,
            Derived::Deadline => Some(what as u8),
        };
        let bytes = manager
            .bytes()
            .chain([0])
            .chain(event_id.as_bytes().iter().copied())
            .chain(ordinal.to_le_bytes())
            .chain(marker);
        for byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    };
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&hash(0x8422_2325_cbf2_9ce4).to_be_bytes());
    Uuid::new_v8(bytes)
}

/// Runs process manager `M`: handles a batch, then moves its checkpoint.
pub(crate) struct ProcessManagerRunner<M> {
    manager: M,
}

impl<M: ProcessManager> ProcessManagerRunner<M> {
    pub(crate) fn new(manager: M) -> Self {
        Self { manager }
    }

    async fn handle(&self, env: &StepEnv<'_>, envelope: &Envelope) -> Result<(), ProcessorError> {
        let app = env
            .app
            .clone()
            .and_then(|app| Arc::downcast::<Inner>(app).ok())
            .map(Cqrs::from_inner)
            .ok_or(ProcessorError::AppDropped)?;
        let context = ProcessContext::new(&app, M::NAME, envelope, None);
        let changes = self
            .manager
            .handle(envelope, &context)
            .await
            .map_err(ProcessorError::Handler)?;
        if changes.is_empty() {
            return Ok(());
        }
        app.change_process_deadlines(M::NAME, envelope, changes, envelope.position * 2, None)
            .await
    }
}

impl<M: ProcessManager> Deliver for ProcessManagerRunner<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::ProcessManager
    }

    fn segments(&self) -> u32 {
        M::SEGMENTS
    }

    fn handles(&self, event_name: &str) -> bool {
        M::handles(event_name)
    }

    fn deliver<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ProcessorError>> {
        Box::pin(self.handle(env, envelope))
    }
}
