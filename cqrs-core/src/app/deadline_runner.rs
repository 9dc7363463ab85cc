//! The processor that fires due deadlines, `cqrs.deadlines`, on the
//! processors' claims, leases and fencing; and the metrics of what is
//! pending, refreshed by the node that owns its first segment.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::deadlines::FiredDeadlines;
use super::{Cqrs, Inner};
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::processor::{Failed, Processor, ProcessorError, ProcessorKind, Step, StepEnv, Work};
use crate::store::{DueQuery, ReadLimit};

/// The processor that fires due deadlines, `cqrs.deadlines`: each segment
/// fires the deadlines of its streams, on whichever node owns it (the
/// processors' claims, leases and fencing), and idles until the next one
/// falls due, an append, or the poll interval. Its checkpoint follows the
/// log's head, so catching up, waiting and status treat it like the others.
pub(crate) struct DeadlineRunner {
    /// When the pending deadlines were last counted for the metrics.
    counted: Mutex<Option<Instant>>,
}

/// Its name, segments and checkpoints' key.
pub(crate) const RUNNER: &str = "cqrs.deadlines";

/// The longest it idles on one due time before looking again (a deadline
/// scheduled by another node in the meantime may be due sooner).
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// How often the owner of the first segment counts the pending deadlines
/// for the metrics (a count reads every row).
const COUNT_EVERY: Duration = Duration::from_secs(30);

impl DeadlineRunner {
    pub(crate) fn new() -> Self {
        Self {
            counted: Mutex::new(None),
        }
    }

    /// Sets the deadline gauges, at most every [`COUNT_EVERY`], on the
    /// node that owns segment 0.
    async fn count(&self, app: &Cqrs, env: &StepEnv<'_>, work: &Work<'_>) {
        if work.claim.segment != 0 {
            return;
        }
        {
            let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
            if counted.is_some_and(|at| at.elapsed() < COUNT_EVERY) {
                return;
            }
            *counted = Some(Instant::now());
        }
        let owners = app.owner_types();
        match env
            .store
            .deadline_counts(app.inner.clock.now(), Some(owners))
            .await
        {
            Ok(counts) => {
                crate::telemetry::deadline_counts(counts.pending, counts.due, counts.parked);
            }
            Err(error) => tracing::debug!("counting the pending deadlines failed: {error}"),
        }
    }

    async fn fire(&self, env: &StepEnv<'_>, work: &Work<'_>) -> Result<Step, Failed> {
        let app = env
            .app
            .clone()
            .and_then(|app| Arc::downcast::<Inner>(app).ok())
            .map(Cqrs::from_inner)
            .ok_or(Failed::checkpoint(ProcessorError::AppDropped))?;
        let checkpoint = env
            .views
            .backend()
            .checkpoint(RUNNER, work.claim.segment)
            .await
            .map_err(Failed::checkpoint)?;
        let head = env
            .store
            .last_position()
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        self.count(&app, env, work).await;
        let mut report = FiredDeadlines::default();
        let more = app
            .fire_page(Some((work.claim.segment, work.segments)), &mut report)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        for failed in &report.failed {
            tracing::warn!(
                aggregate_type = failed.deadline.aggregate_type,
                aggregate_id = failed.deadline.aggregate_id,
                deadline = failed.deadline.deadline.name,
                retry_at = ?failed.retry_at,
                "firing a deadline failed: {}",
                failed.error
            );
        }
        // Moving the checkpoint also checks the claim: a node that lost
        // its segment stops here (what it fired took effect once anyway).
        let step = if head > checkpoint {
            work.advance(env, checkpoint, head, Vec::new()).await?
        } else {
            Step::Idle(checkpoint)
        };
        let position = match step {
            Step::Advanced(position) | Step::Idle(position) => position,
        };
        Ok(if more {
            Step::Advanced(position)
        } else {
            Step::Idle(position)
        })
    }

    /// Sleeps until the segment's next deadline falls due (by the app's
    /// clock), at most [`LONGEST_SLEEP`].
    async fn until_next_due(&self, env: &StepEnv<'_>, work: &Work<'_>) {
        let Some(app) = env
            .app
            .clone()
            .and_then(|app| Arc::downcast::<Inner>(app).ok())
        else {
            return std::future::pending().await;
        };
        let owners = app.deadline_owners.iter().map(|owner| owner.aggregate);
        let query = DueQuery::new(DateTime::<Utc>::MAX_UTC, 1)
            .of(owners)
            .in_segment(work.claim.segment, work.segments);
        let now = app.clock.now();
        let sleep = match env.store.due_deadlines(query).await {
            Ok(next) => match next.first() {
                Some(next) if next.deadline.due_at > now => (next.deadline.due_at - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(LONGEST_SLEEP),
                // Due already, so waiting for a retry's time: the poll
                // interval wakes the segment.
                Some(_) => return std::future::pending().await,
                None => LONGEST_SLEEP,
            },
            // The step that follows reports the store's failure.
            Err(_) => LONGEST_SLEEP,
        };
        futures_timer::Delay::new(sleep).await;
    }
}

impl Processor for DeadlineRunner {
    fn name(&self) -> &'static str {
        RUNNER
    }

    fn key(&self) -> &str {
        RUNNER
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Deadlines
    }

    fn segments(&self) -> u32 {
        4
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        _limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.fire(env, work))
    }

    fn retry<'a>(
        &'a self,
        _env: &'a StepEnv<'a>,
        _work: &'a Work<'a>,
        _envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>> {
        // It parks no event of the log: a failing deadline waits in its
        // own row (see `Deadlines::retry`).
        Box::pin(std::future::ready(Ok(())))
    }

    fn idle<'a>(&'a self, env: &'a StepEnv<'a>, work: &'a Work<'a>) -> BoxFuture<'a, ()> {
        Box::pin(self.until_next_due(env, work))
    }
}
