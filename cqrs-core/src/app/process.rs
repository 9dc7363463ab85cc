//! Process managers: [`ProcessManager`], the [`ProcessContext`] their
//! handlers send commands through, and the runner that follows the log for
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use uuid::Uuid;

use super::{Committed, Cqrs, Inner};
use crate::aggregate::{Aggregate, IntoCommand};
use crate::envelope::{Envelope, Metadata};
use crate::error::{CommandError, LoadError};
use crate::future::BoxFuture;
use crate::handler::HandlerError;
use crate::processor::{Failed, Processor, ProcessorError, ProcessorKind, Step, StepEnv};
use crate::store::ReadLimit;

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
    /// returns with [`Committed::duplicate`] set and is not run again.
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
            values: self.event.metadata.values.clone(),
        };
        self.app.execute_with(aggregate_id, command, metadata).await
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

    async fn run_step(&self, env: &StepEnv<'_>, limit: ReadLimit) -> Result<Step, Failed> {
        let views = env.views.backend();
        let checkpoint = views
            .checkpoint(M::NAME)
            .await
            .map_err(Failed::checkpoint)?;
        let batch = env
            .store
            .read_all(checkpoint + 1, limit)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        let app = env
            .app
            .clone()
            .and_then(|app| Arc::downcast::<Inner>(app).ok())
            .map(Cqrs::from_inner)
            .ok_or_else(|| Failed::after(checkpoint, ProcessorError::AppDropped))?;
        // Commands are not undone when a later event fails, so the checkpoint
        // moves past every event handled before it.
        let mut handled = checkpoint;
        for envelope in &batch {
            if M::handles(&envelope.event_name) {
                let context = ProcessContext {
                    app: &app,
                    manager: M::NAME,
                    event: envelope,
                    sent: AtomicU32::new(0),
                };
                if let Err(error) = self.manager.handle(envelope, &context).await {
                    let error = ProcessorError::Handler(error);
                    if handled > checkpoint {
                        views
                            .advance(M::NAME, checkpoint, handled)
                            .await
                            .map_err(|error| Failed::after(handled, error))?;
                    }
                    return Err(Failed::at(envelope, error));
                }
            }
            handled = envelope.position;
        }
        // Another runner moving the checkpoint first is harmless: the
        // commands of the events both handled ran once.
        views
            .advance(M::NAME, checkpoint, last)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        Ok(Step::Advanced(last))
    }
}

impl<M: ProcessManager> Processor for ProcessManagerRunner<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::ProcessManager
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, limit))
    }

    fn reset<'a>(&'a self, _env: &'a StepEnv<'a>) -> BoxFuture<'a, Result<(), ProcessorError>> {
        // A process manager's commands cannot be unsent: it is never rebuilt.
        Box::pin(std::future::ready(Err(ProcessorError::Unsupported {
            processor: M::NAME,
            kind: ProcessorKind::ProcessManager,
            reason: "only projections are rebuilt",
        })))
    }
}
