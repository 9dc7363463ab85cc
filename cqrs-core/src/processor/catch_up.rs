//! Runs that end: a catch-up to the end of the log as it is now, and a
//! rebuild of a projection from position 0.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    Claim, Failed, ProcessorError, ProcessorFailure, ProcessorsError, RebuildProgress, Runner,
    Shared, Slot, Step, lock,
};
use crate::view::ViewError;

impl Shared {
    /// Processes every segment of `runner` up to the end of the log as it
    /// is now: those this node holds or can claim here, and waits for those
    /// another live node holds to get there (or for its lease to run out,
    /// if it died).
    pub(super) async fn catch_up_one(&self, runner: &Runner) -> Result<(), ProcessorFailure> {
        if let Some(failure) = runner.stopped_failure() {
            return Err(failure);
        }
        if lock(&runner.state).retired {
            return Ok(());
        }
        let failed = |error: ViewError| runner.record_once(Failed::checkpoint(error));
        self.prepare(runner).await.map_err(failed)?;
        let end = self
            .store
            .last_position()
            .await
            .map_err(|error| runner.record_once(Failed::checkpoint(error)))?;
        let (backend, settings) = (self.views.backend(), &self.settings);
        for slot in &runner.segments {
            // This node's claim, and whether it was taken for this call;
            // none once another live node has processed the segment.
            let held = loop {
                if let Some(claim) = slot.claim() {
                    break Some((claim, false));
                }
                let claimed = backend
                    .claim(
                        runner.key(),
                        slot.index,
                        &settings.node,
                        settings.lease.length,
                    )
                    .await
                    .map_err(failed)?;
                if let Some(claim) = claimed {
                    self.take(runner, &[(slot, claim)]).await.map_err(failed)?;
                    break Some((claim, true));
                }
                let position = backend
                    .checkpoint(runner.key(), slot.index)
                    .await
                    .map_err(failed)?;
                runner.progressed(slot, position);
                if position >= end {
                    break None;
                }
                futures_timer::Delay::new(settings.poll_interval).await;
            };
            let Some((claim, borrowed)) = held else {
                continue;
            };
            let outcome = self.run_to_end(runner, slot, claim).await;
            if borrowed {
                slot.lose(claim);
                let _ = backend.release(runner.key(), claim).await;
            }
            outcome?;
        }
        lock(&runner.state).failure = None;
        Ok(())
    }

    /// Steps one segment until it is idle at the end of the log.
    async fn run_to_end(
        &self,
        runner: &Runner,
        slot: &Slot,
        claim: Claim,
    ) -> Result<(), ProcessorFailure> {
        let env = self.env();
        let work = runner.work(slot, claim);
        loop {
            match runner
                .processor
                .step(&env, &work, self.settings.batch)
                .await
            {
                Ok(Step::Advanced(position)) => runner.progressed(slot, position),
                Ok(Step::Idle(position)) => {
                    runner.progressed(slot, position);
                    return Ok(());
                }
                Err(failed) => return Err(runner.record_once(failed)),
            }
        }
    }

    pub(super) async fn rebuild(
        &self,
        runner: &Runner,
        mut progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorsError> {
        let started = Instant::now();
        let failed = |error: ProcessorError| self.failed_call(runner, error);
        let backend = self.views.backend();
        let settings = &self.settings;
        self.prepare(runner)
            .await
            .map_err(|error| failed(error.into()))?;
        let total = self
            .store
            .last_position()
            .await
            .map_err(|error| failed(error.into()))?;
        let mut claims = Vec::new();
        for slot in &runner.segments {
            let claim = match slot.claim() {
                Some(claim) => Some(claim),
                None => backend
                    .claim(
                        runner.key(),
                        slot.index,
                        &settings.node,
                        settings.lease.length,
                    )
                    .await
                    .map_err(|error| failed(error.into()))?,
            };
            match claim {
                Some(claim) => claims.push((slot, claim)),
                None => {
                    for (_, claim) in claims {
                        let _ = backend.release(runner.key(), claim).await;
                    }
                    return Err(failed(ProcessorError::Claimed {
                        processor: runner.name(),
                        segment: slot.index,
                    }));
                }
            }
        }
        backend
            .reset(runner.key(), 0, true)
            .await
            .map_err(|error| failed(error.into()))?;
        runner.processor.cleared(runner.segment_count());
        for slot in &runner.segments {
            slot.position.store(0, Ordering::SeqCst);
            lock(&slot.blocked).clear();
        }
        runner.position.store(0, Ordering::SeqCst);
        lock(&runner.state).failure = None;
        let env = self.env();
        let mut idle = vec![false; claims.len()];
        let mut outcome = Ok(());
        let mut reported = 0;
        while outcome.is_ok() && idle.contains(&false) {
            for ((slot, claim), idle) in claims.iter().zip(&mut idle) {
                if *idle {
                    continue;
                }
                let work = runner.work(slot, *claim);
                match runner.processor.step(&env, &work, settings.batch).await {
                    Ok(Step::Advanced(position)) => runner.progressed(slot, position),
                    Ok(Step::Idle(position)) => {
                        runner.progressed(slot, position);
                        *idle = true;
                    }
                    Err(failure) => {
                        outcome = Err(ProcessorsError::Failed(runner.record_once(failure)));
                        break;
                    }
                }
            }
            let done = runner.position.load(Ordering::SeqCst);
            if done > reported {
                reported = done;
                progress(RebuildProgress {
                    done,
                    total,
                    elapsed: started.elapsed(),
                });
            }
        }
        for (slot, claim) in claims {
            if slot.claim().is_none() {
                let _ = backend.release(runner.key(), claim).await;
            }
        }
        outcome?;
        Ok(RebuildProgress {
            done: runner.position.load(Ordering::SeqCst),
            total,
            elapsed: started.elapsed(),
        })
    }
}
