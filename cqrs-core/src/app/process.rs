//! Process managers: [`ProcessManager`], the [`ProcessContext`] their
//! handlers send commands through, and the runner that follows the log for
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use uuid::Uuid;

use super::{Committed, Cqrs, Inner, Reuse};
use crate::aggregate::{Aggregate, IntoCommand};
use crate::envelope::{Envelope, Metadata};
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
pub trait ProcessManager: Send + Sync + 'static {
    /// The name, which keys its checkpoint and its command ids.
    const NAME: &'static str;

    /// How many segments it has: instances share them, one stream's events
    /// all go to one (`#[process_manager(segments = N)]`, default 1).
    const SEGMENTS: u32 = 1;

    /// Whether it reacts to events stored under `event_name`.
    fn handles(event_name: &str) -> bool;

    /// Reacts to one event of the log.
    fn handle<'a>(
        &'a self,
        envelope: &'a Envelope,
        context: &'a ProcessContext<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
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
}

impl<'a> ProcessContext<'a> {
    /// The event being handled.
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
            command_id: Some(command_id(self.manager, self.event.event_id, ordinal)),
            command_digest: None,
            values: self.event.metadata.values.clone(),
        };
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

/// The id of the `ordinal`-th command `manager` sends for one event: the same
/// every time the event is handled (UUIDv8 of two FNV-1a hashes).
fn command_id(manager: &str, event_id: Uuid, ordinal: u32) -> Uuid {
    let hash = |seed: u64| {
        let mut hash = seed;
        let bytes = manager
            .bytes()
            .chain([0])
            .chain(event_id.as_bytes().iter().copied())
            .chain(ordinal.to_le_bytes());
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
        let context = ProcessContext {
            app: &app,
            manager: M::NAME,
            event: envelope,
            sent: AtomicU32::new(0),
        };
        self.manager
            .handle(envelope, &context)
            .await
            .map_err(ProcessorError::Handler)
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
