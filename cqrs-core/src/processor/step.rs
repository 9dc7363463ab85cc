//! One step of a processor on one segment, as the runner sees it: the
//! [`Processor`] trait that projections, process managers and durable
//! handlers implement, what a step is given ([`StepEnv`], [`Work`]) and how
//! it ends ([`Step`], [`Failed`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::segment::belongs;
use super::{Claim, ParkState, ParkedEvent, ProcessorError, ProcessorKind, Settled, lock};
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::store::{DynEventStore, ReadLimit};
use crate::view::{Index, TableSchema, ViewError, ViewStore, ViewTransaction};

/// What the runner needs from a projection, process manager or handler.
pub(crate) trait Processor: Send + Sync {
    fn name(&self) -> &'static str;

    /// The key of its segments and views: the name, or `name@N` for version
    /// N of a projection.
    fn key(&self) -> &str;

    fn kind(&self) -> ProcessorKind;

    /// The projection's version (1 for other processors).
    fn version(&self) -> u32 {
        1
    }

    /// The number of segments it declares.
    fn segments(&self) -> u32;

    /// The indexes of its views (an indexed projection's), which its
    /// version's backend makes when it starts.
    fn indexes(&self) -> &'static [Index] {
        &[]
    }

    /// The tables of a table projection's version, which its backend
    /// makes when it starts.
    fn tables(&self) -> Option<TableSchema> {
        None
    }

    /// Processes the events of `work`'s segment after its checkpoint that
    /// `limit` admits, and commits.
    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>>;

    /// Handles one parked event again and records that it was handled, in
    /// the same transaction as its effect where the processor has one.
    fn retry<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>>;

    /// Its views were emptied for a rebuild of its `segments` segments:
    /// forget what it cached of them.
    fn cleared(&self, _segments: u32) {}

    /// Resolves when there may be work although no event was appended:
    /// a deadline falling due. Raced with the appends and the poll
    /// interval while the segment is idle; never, by default.
    fn idle<'a>(&'a self, _env: &'a StepEnv<'a>, _work: &'a Work<'a>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::pending())
    }

    /// Handles one event an inbox received, which no log holds, if it
    /// takes events of that name: process managers and event handlers do;
    /// projections and gateways, which follow the log, take none.
    fn receive<'a>(
        &'a self,
        _env: &'a StepEnv<'a>,
        _envelope: &'a Envelope,
    ) -> Option<BoxFuture<'a, Result<(), ProcessorError>>> {
        None
    }
}

/// What a step works with.
pub(crate) struct StepEnv<'a> {
    pub(crate) store: &'a dyn DynEventStore,
    pub(crate) views: &'a ViewStore,
    /// The app that runs the processors, for those that send commands; its
    /// type is the app's business.
    pub(crate) app: Option<Arc<dyn Any + Send + Sync>>,
}

/// The segment a step works on, under this node's claim.
pub(crate) struct Work<'a> {
    pub(crate) key: &'a str,
    pub(crate) claim: Claim,
    pub(crate) segments: u32,
    /// The streams of the segment with parked events, and how they stand.
    pub(crate) blocked: &'a Mutex<HashMap<(String, String), ParkState>>,
    /// When the newest event read was recorded (milliseconds since the
    /// epoch), for the processor's lag in seconds.
    pub(crate) newest: &'a AtomicI64,
}

impl Work<'_> {
    /// Whether the event is this segment's to handle.
    pub(crate) fn owns(&self, envelope: &Envelope) -> bool {
        belongs(envelope, self.claim.segment, self.segments)
    }

    /// The segment's checkpoint, and the log's events after it that `limit`
    /// admits (of every segment: `split` sorts them).
    pub(crate) async fn read(
        &self,
        env: &StepEnv<'_>,
        limit: ReadLimit,
    ) -> Result<(u64, Vec<Envelope>), Failed> {
        let checkpoint = env
            .views
            .backend()
            .checkpoint(self.key, self.claim.segment)
            .await
            .map_err(Failed::checkpoint)?;
        let batch = env
            .store
            .read_all(checkpoint + 1, limit)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        if let Some(newest) = batch.last() {
            self.newest
                .store(newest.recorded_at.timestamp_millis(), Ordering::SeqCst);
        }
        Ok((checkpoint, batch))
    }

    /// The events of `batch` this segment handles, and those of them that
    /// wait behind parked events of their stream instead, as the parked
    /// events they become.
    pub(crate) fn split<'b>(
        &self,
        batch: &'b [Envelope],
        handles: impl Fn(&str) -> bool,
    ) -> (Vec<&'b Envelope>, Vec<ParkedEvent>) {
        let blocked = lock(self.blocked);
        let mut mine = Vec::with_capacity(batch.len());
        let mut parked = Vec::new();
        for envelope in batch {
            if !self.owns(envelope) || !handles(&envelope.event_name) {
                continue;
            }
            let stream = (!blocked.is_empty()).then(|| {
                (
                    envelope.aggregate_type.clone(),
                    envelope.aggregate_id.clone(),
                )
            });
            match stream.and_then(|stream| blocked.get(&stream)) {
                Some(&state) => {
                    let mut event =
                        ParkedEvent::of(self.key, self.claim.segment, envelope, None, 0);
                    event.state = state;
                    parked.push(event);
                }
                None => mine.push(envelope),
            }
        }
        (mine, parked)
    }

    /// Starts writing the segment's batch under the claim.
    pub(crate) async fn begin<'e>(
        &'e self,
        env: &'e StepEnv<'e>,
    ) -> Result<Box<dyn ViewTransaction + 'e>, ViewError> {
        env.views.backend().begin(self.key, self.claim).await
    }

    /// Records a parked event handled, its effect outside the views done,
    /// leaving the checkpoint where it is.
    pub(crate) async fn handled(
        &self,
        env: &StepEnv<'_>,
        envelope: &Envelope,
    ) -> Result<(), Failed> {
        let failed = |error| Failed::after(envelope.position, error);
        let mut transaction = self.begin(env).await.map_err(failed)?;
        let checkpoint = transaction.checkpoint();
        transaction
            .settle(envelope.position, Settled::Handled)
            .await
            .map_err(failed)?;
        transaction.commit(checkpoint).await.map_err(failed)
    }

    /// Moves the checkpoint from `from` past events that changed nothing
    /// but `parked` (maybe empty) to `to`; if another step moved it
    /// meanwhile, the next step starts from there.
    pub(crate) async fn advance(
        &self,
        env: &StepEnv<'_>,
        from: u64,
        to: u64,
        parked: Vec<ParkedEvent>,
    ) -> Result<Step, Failed> {
        let moved = async {
            if parked.is_empty() {
                return env
                    .views
                    .backend()
                    .advance(self.key, self.claim, from, to)
                    .await;
            }
            let mut transaction = self.begin(env).await?;
            if transaction.checkpoint() != from {
                return Ok(false);
            }
            transaction.park(parked).await?;
            transaction.commit(to).await?;
            Ok(true)
        }
        .await
        .map_err(|error| Failed::after(from, error))?;
        Ok(Step::Advanced(if moved { to } else { from }))
    }
}

/// What one step came to.
#[derive(Debug, Clone, Copy)]
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
    /// The event it failed at, to park it.
    pub(crate) envelope: Option<Box<Envelope>>,
    pub(crate) error: ProcessorError,
    /// The checkpoint the step committed before it failed, if it moved.
    pub(crate) committed: Option<u64>,
}

impl Failed {
    pub(crate) fn at(envelope: &Envelope, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: Some(envelope.position),
            event_id: Some(envelope.event_id),
            envelope: Some(Box::new(envelope.clone())),
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
            envelope: None,
            error: error.into(),
            committed: None,
        }
    }

    /// Reading the checkpoint failed.
    pub(crate) fn checkpoint(error: impl Into<ProcessorError>) -> Self {
        Self {
            position: None,
            event_id: None,
            envelope: None,
            error: error.into(),
            committed: None,
        }
    }

    /// Whether another node owns the segment now.
    pub(crate) fn is_fenced(&self) -> bool {
        matches!(self.error, ProcessorError::View(ViewError::Fenced { .. }))
    }
}
