//! One step of a processor, as the runner sees it: the [`Processor`] trait
//! that projections, process managers and durable handlers implement, what a
//! step is given ([`StepEnv`]) and how it ends ([`Step`], [`Failed`]).

use std::any::Any;
use std::sync::Arc;

use uuid::Uuid;

use super::{ProcessorError, ProcessorKind};
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::store::{DynEventStore, ReadLimit};
use crate::view::ViewStore;

/// What the runner needs from a projection, process manager or handler.
pub(crate) trait Processor: Send + Sync {
    fn name(&self) -> &'static str;

    fn kind(&self) -> ProcessorKind;

    /// Processes the events after the checkpoint that `limit` admits, and commits.
    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>>;

    /// Empties the views and sets the checkpoint back to 0.
    fn reset<'a>(&'a self, env: &'a StepEnv<'a>) -> BoxFuture<'a, Result<(), ProcessorError>>;
}

/// What a step works with.
pub(crate) struct StepEnv<'a> {
    pub(crate) store: &'a dyn DynEventStore,
    pub(crate) views: &'a ViewStore,
    /// The app that runs the processors, for those that send commands; its
    /// type is the app's business.
    pub(crate) app: Option<Arc<dyn Any + Send + Sync>>,
}

/// What one step came to.
pub(crate) enum Step {
    /// Processed events up to this position.
    Advanced(u64),
    /// Nothing after this position.
    Idle(u64),
}

/// A step that failed at an event, or reading.
pub(crate) struct Failed {
    /// The event's position, or the first the step could not read; `None`
    /// when not even the checkpoint could be read.
    pub(crate) position: Option<u64>,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) error: ProcessorError,
    /// The checkpoint the step committed before it failed, if it moved.
    pub(crate) committed: Option<u64>,
}

impl Failed {
    pub(crate) fn at(envelope: &Envelope, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: Some(envelope.position),
            event_id: Some(envelope.event_id),
            error: error.into(),
            committed: None,
        }
    }

    /// The step had committed its checkpoint at `checkpoint` first.
    pub(crate) fn after_committing(mut self, checkpoint: u64) -> Self {
        self.committed = Some(checkpoint);
        self
    }

    /// Reading or committing after `checkpoint` failed.
    pub(crate) fn after(checkpoint: u64, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: Some(checkpoint + 1),
            event_id: None,
            error: error.into(),
            committed: None,
        }
    }

    /// Reading the checkpoint failed.
    pub(crate) fn checkpoint(error: impl Into<ProcessorError>) -> Self {
        Self {
            position: None,
            event_id: None,
            error: error.into(),
            committed: None,
        }
    }
}
