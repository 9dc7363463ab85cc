//! The live run of the processors on this node: per processor, its
//! coordinator (`coordinator.rs`) and a loop per segment that processes
//! the batches of the segments this node owns, retries failing events and
//! parks those that keep failing.

use std::sync::atomic::Ordering;

use tracing::Instrument;

use super::{Claim, Failed, FailureCause, ProcessorError, Run, Runner, Shared, Slot, Step, lock};
use crate::future::BoxFuture;
use crate::future::{JoinAll, Race};
use crate::store::ReadLimit;
use crate::view::ViewError;

impl Shared {
    pub(super) async fn follow_all(&self, run: &Run) {
        let loops: Vec<BoxFuture<'_, ()>> = self
            .runners
            .iter()
            .map(|runner| Box::pin(self.follow(runner, run)) as BoxFuture<'_, ()>)
            .collect();
        JoinAll(loops).await;
    }

    /// One processor on this node: its coordinator and segment loops, then,
    /// once they stopped, its claims given up.
    async fn follow(&self, runner: &Runner, run: &Run) {
        let mut loops: Vec<BoxFuture<'_, ()>> = vec![Box::pin(self.coordinate(runner, run))];
        for slot in &runner.segments {
            loops.push(Box::pin(self.follow_segment(runner, slot, run)));
        }
        JoinAll(loops).await;
        let backend = self.views.backend();
        if let Err(error) = backend.leave(runner.key(), &self.settings.node).await {
            tracing::warn!(processor = runner.name(), %error, "could not give up the claims");
        }
        for slot in &runner.segments {
            *lock(&slot.claim) = None;
            lock(&slot.blocked).clear();
        }
    }

    /// The live loop of one segment on this node.
    async fn follow_segment(&self, runner: &Runner, slot: &Slot, run: &Run) {
        let mut streak = Streak::default();
        loop {
            let woken = slot.wake.listen();
            if run.is_stopping() {
                break;
            }
            if lock(&runner.state).stopped {
                // Given up on a failure that cannot be parked: until restarted.
                let restarted = runner.restarted.listen();
                if lock(&runner.state).stopped {
                    run.until_stopped(restarted).await;
                }
                streak.attempts = 0;
                streak.failing = None;
                continue;
            }
            let retired = lock(&runner.state).retired;
            let Some(claim) = slot.claim().filter(|_| !retired) else {
                if retired {
                    break;
                }
                run.until_stopped(woken).await;
                continue;
            };
            if self.release_if_asked(runner, slot, claim).await {
                continue;
            }
            self.retry_if_asked(runner, slot, claim).await;
            // Listen before reading, so a commit during the read still wakes us.
            let appended = self.appended.listen();
            match self.batch(runner, slot, claim, &streak).await {
                Ok(step) => {
                    self.advanced(runner, slot, step, &mut streak);
                    if let Step::Idle(_) = step {
                        let (env, work) = (self.env(), runner.work(slot, claim));
                        let wait: Vec<BoxFuture<'_, ()>> = vec![
                            Box::pin(appended),
                            Box::pin(woken),
                            Box::pin(self.store.wait_for_appends()),
                            Box::pin(futures_timer::Delay::new(self.settings.poll_interval)),
                            runner.processor.idle(&env, &work),
                        ];
                        run.until_stopped(Race(wait)).await;
                    }
                }
                Err(failed) if failed.is_fenced() => {
                    runner.fenced.fetch_add(1, Ordering::SeqCst);
                    tracing::warn!(
                        processor = runner.name(),
                        segment = slot.index,
                        "batch fenced: another node owns the segment"
                    );
                    slot.lose(claim);
                }
                Err(failed)
                    if matches!(
                        failed.error,
                        ProcessorError::View(ViewError::Conflict { .. })
                    ) =>
                {
                    runner.conflicts.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(
                        processor = runner.name(),
                        segment = slot.index,
                        "{}",
                        failed.error
                    );
                }
                Err(failed) => {
                    self.failed(runner, slot, claim, run, failed, &mut streak)
                        .await;
                }
            }
        }
    }

    /// Gives the segment up if the coordinator asked to (to even out the
    /// nodes' shares); true if it did.
    async fn release_if_asked(&self, runner: &Runner, slot: &Slot, claim: Claim) -> bool {
        if !slot.release.swap(false, Ordering::SeqCst) {
            return false;
        }
        slot.lose(claim);
        if let Err(error) = self.views.backend().release(runner.key(), claim).await {
            tracing::warn!(processor = runner.name(), %error, "could not release a segment");
        }
        true
    }

    /// Retries the segment's parked events if an operator asked to.
    async fn retry_if_asked(&self, runner: &Runner, slot: &Slot, claim: Claim) {
        if slot.retry.swap(false, Ordering::SeqCst)
            && let Err(error) = self.retry_parked(runner, slot, claim).await
        {
            tracing::warn!(processor = runner.name(), segment = slot.index, %error, "retrying parked events failed");
            slot.retry.store(true, Ordering::SeqCst);
        }
    }

    /// One batch of the segment, in its span: one event at a time while an
    /// event is failing.
    async fn batch(
        &self,
        runner: &Runner,
        slot: &Slot,
        claim: Claim,
        streak: &Streak,
    ) -> Result<Step, Failed> {
        let limit = if streak.failing.is_none() {
            self.settings.batch
        } else {
            ReadLimit::events(1)
        };
        let env = self.env();
        let work = runner.work(slot, claim);
        let from = slot.position.load(Ordering::SeqCst);
        let span = tracing::info_span!(
            "processor.batch",
            processor = runner.name(),
            segment = slot.index,
            from,
            to = tracing::field::Empty,
            lag = self.head.load(Ordering::SeqCst).saturating_sub(from),
        );
        let stepped = runner
            .processor
            .step(&env, &work, limit)
            .instrument(span.clone())
            .await;
        if let Ok(Step::Advanced(position) | Step::Idle(position)) = stepped {
            span.record("to", position);
        }
        stepped
    }

    /// After a batch that committed: the progress, the delay metric, and
    /// the end of an outage or of a failing event the segment is past.
    fn advanced(&self, runner: &Runner, slot: &Slot, step: Step, streak: &mut Streak) {
        if streak.outages > 0 {
            streak.outages = 0;
            lock(&runner.state).failure = None;
            tracing::info!(processor = runner.name(), "processor resumed");
        }
        let position = match step {
            Step::Advanced(position) | Step::Idle(position) => position,
        };
        runner.progressed(slot, position);
        let delay = match step {
            Step::Advanced(_) => slot.newest_age(),
            Step::Idle(_) => 0.0,
        };
        slot.delay.store(delay.to_bits(), Ordering::SeqCst);
        let slowest = runner
            .segments
            .iter()
            .map(|segment| f64::from_bits(segment.delay.load(Ordering::SeqCst)))
            .fold(0.0, f64::max);
        crate::telemetry::processor_delay(runner.name(), slowest);
        if streak.failing.is_some_and(|at| position >= at) {
            streak.failing = None;
            streak.attempts = 0;
            lock(&runner.state).failure = None;
        }
    }

    /// After a batch that failed: the failure recorded, then a pause by the
    /// retry policy, or the event parked once its attempts are spent.
    async fn failed(
        &self,
        runner: &Runner,
        slot: &Slot,
        claim: Claim,
        run: &Run,
        mut failed: Failed,
        streak: &mut Streak,
    ) {
        let policy = self.settings.retry;
        if let Some(committed) = failed.committed {
            runner.progressed(slot, committed);
        }
        let (tries, give_up, delay) = match failed.error.cause() {
            FailureCause::Event => {
                streak.attempts += 1;
                streak.failing = failed.position;
                let give_up = streak.attempts >= policy.max_attempts;
                let delay = policy.delay(streak.attempts, policy.max_delay);
                (streak.attempts, give_up, delay)
            }
            FailureCause::Database | FailureCause::Broker => {
                streak.outages += 1;
                let delay = policy.delay(streak.outages, policy.outage_delay);
                (streak.outages, false, delay)
            }
        };
        let envelope = failed.envelope.take().filter(|_| give_up);
        let failure = runner.record(failed, tries, give_up && envelope.is_none());
        tracing::warn!(
            processor = failure.processor,
            segment = slot.index,
            position = failure.position,
            attempts = tries,
            cause = ?failure.cause,
            "{}",
            failure.error
        );
        let Some(envelope) = envelope else {
            if !give_up {
                run.until_stopped(futures_timer::Delay::new(delay)).await;
            }
            return;
        };
        let error = failure.error.to_string();
        match self
            .park(runner, slot, claim, &envelope, error, tries)
            .await
        {
            Ok(true) => {
                streak.attempts = 0;
                streak.failing = None;
            }
            // Events of the segment before it are not committed yet: one at
            // a time up to it first.
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(processor = runner.name(), %error, "could not park an event");
                run.until_stopped(futures_timer::Delay::new(delay)).await;
            }
        }
    }
}

/// Where one segment's live loop stands between its batches.
#[derive(Debug, Default)]
struct Streak {
    /// Failures in a row of the event at hand.
    attempts: u32,
    /// Failures in a row of the database or the broker.
    outages: u32,
    /// The event that failed: until the segment is past it, one event at a
    /// time, so the good events before it are committed.
    failing: Option<u64>,
}
