//! A process manager's deadlines. What its handlers schedule and cancel is
//! written per instance, ordered by the handled event's position (so
//! events handled again after a crash, or by segments running apart, do
//! not revive what a later event cancelled). A due one is claimed (from
//! then on a cancel leaves it be), handled by its `#[deadline]` handler,
//! whose commands carry ids derived from the deadline (a fire repeated
//! after a crash sends none twice), and consumed with the changes that
//! handler decided.

use std::convert::Infallible;
use std::sync::Mutex;

use super::deadlines::FireOutcome;
use super::process::{Derived, SentCommand, derived_id};
use super::{Cqrs, ProcessContext, ProcessManager};
use crate::deadline::{DeadlineChange, DeadlineContext};
use crate::envelope::{Envelope, Metadata};
use crate::error::CommandError;
use crate::future::BoxFuture;
use crate::processor::{FailureCause, ProcessorError, caused_by_outage};
use crate::store::{DeadlineChanges, DeadlineWrite, StoreError, StoredDeadline};

impl Cqrs {
    /// Writes the deadline changes a handler of `manager` decided on
    /// `trigger`, an event of the log or (as an envelope) a deadline that
    /// fired, at `origin`: the instance's first, with `consumed` (a fired
    /// deadline's) before them, then each other instance's.
    pub(crate) async fn change_process_deadlines(
        &self,
        manager: &'static str,
        trigger: &Envelope,
        changes: Vec<DeadlineChange>,
        origin: u64,
        consumed: Option<DeadlineWrite>,
    ) -> Result<(), ProcessorError> {
        let now = self.inner.clock.now();
        let metadata = Metadata {
            correlation_id: Some(trigger.metadata.correlation_id.unwrap_or(trigger.event_id)),
            causation_id: Some(trigger.event_id),
            command_id: None,
            command_digest: None,
            values: trigger.metadata.values.clone(),
        };
        let mut instances: Vec<(String, Vec<DeadlineWrite>)> =
            vec![(trigger.aggregate_id.clone(), consumed.into_iter().collect())];
        for (ordinal, change) in (0..).zip(changes) {
            let instance = change
                .instance()
                .unwrap_or(&trigger.aggregate_id)
                .to_owned();
            let name = change.name();
            let deadline_id = derived_id(manager, trigger.event_id, ordinal, Derived::Deadline);
            let write = change
                .into_write(now, deadline_id, &metadata)
                .map_err(|source| {
                    ProcessorError::Handler(Box::new(CommandError::<Infallible>::EncodeDeadline {
                        name,
                        source,
                    }))
                })?;
            match instances.iter_mut().find(|(known, _)| *known == instance) {
                Some((_, writes)) => writes.push(write),
                None => instances.push((instance, vec![write])),
            }
        }
        for (instance, writes) in instances {
            if writes.is_empty() {
                continue;
            }
            let changes = DeadlineChanges {
                owner_type: manager.to_owned(),
                owner_id: instance,
                origin: Some(origin),
                writes,
            };
            self.inner.store.change_deadlines(changes).await?;
        }
        Ok(())
    }

    /// Fires one deadline of process manager `M` with `manager`, its sent
    /// commands kept in `recorder` when there is one (a fixture's).
    pub(crate) async fn fire_process<M: ProcessManager>(
        &self,
        manager: &M,
        due: StoredDeadline,
        recorder: Option<&Mutex<Vec<SentCommand>>>,
    ) -> FireOutcome {
        let StoredDeadline {
            aggregate_id: instance,
            deadline,
            ..
        } = due;
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let until = now + self.inner.processors.lease().length;
        match store
            .claim_deadline(M::NAME, &instance, deadline.deadline_id, now, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => return FireOutcome::Gone,
            Err(error) => return store_failed(error),
        }
        let envelope = Envelope {
            event_id: deadline.deadline_id,
            aggregate_type: M::NAME.to_owned(),
            aggregate_id: instance.clone(),
            sequence: 0,
            position: 0,
            event_name: deadline.name.clone(),
            event_version: deadline.version,
            recorded_at: now,
            metadata: deadline.metadata.clone(),
            payload: deadline.payload.clone(),
        };
        let context = ProcessContext::new(self, M::NAME, &envelope, recorder);
        let deadline_context = DeadlineContext {
            aggregate_id: &instance,
            version: 0,
            key: &deadline.key,
            due_at: deadline.due_at,
            metadata: &deadline.metadata,
            clock: &*self.inner.clock,
        };
        let changes = match manager.handle_deadline(&deadline_context, &context).await {
            Ok(changes) => changes,
            Err(error) if caused_by_outage(&*error) => {
                return FireOutcome::Outage(error.to_string());
            }
            Err(error) => return FireOutcome::Failed(error.to_string()),
        };
        // Ordered after every event recorded before the fire.
        let origin = match store.last_position().await {
            Ok(head) => head * 2 + 1,
            Err(error) => return store_failed(error),
        };
        let consumed = DeadlineWrite::Consume {
            name: deadline.name.clone(),
            key: deadline.key.clone(),
            deadline_id: deadline.deadline_id,
        };
        match self
            .change_process_deadlines(M::NAME, &envelope, changes, origin, Some(consumed))
            .await
        {
            Ok(()) => FireOutcome::Fired,
            // Scheduled again while it fired: this one's effects stand.
            Err(ProcessorError::Store(StoreError::DeadlineGone { .. })) => FireOutcome::Gone,
            Err(error) if error.cause() == FailureCause::Database => {
                FireOutcome::Outage(error.to_string())
            }
            Err(error) => FireOutcome::Failed(error.to_string()),
        }
    }
}

/// A fire that met a store failure: an outage (no attempt) or an attempt.
fn store_failed(error: StoreError) -> FireOutcome {
    if error.is_transient() {
        FireOutcome::Outage(error.to_string())
    } else {
        FireOutcome::Failed(error.to_string())
    }
}

/// The fire function of process manager `M`'s [`DeadlineOwner`](super::DeadlineOwner).
pub(super) fn fire<M: ProcessManager + Default>(
    app: &Cqrs,
    deadline: StoredDeadline,
) -> BoxFuture<'_, FireOutcome> {
    Box::pin(async move { app.fire_process(&M::default(), deadline, None).await })
}
