//! Read your writes: waiting until a processor has processed the log up to
//! a position. The segments this node runs report their progress as they
//! commit; while a waiter needs a segment another node runs (or no node
//! here runs), it reads the segments' positions from the store every few
//! milliseconds instead of learning them at the next lease renewal.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{ProcessorsError, Runner, Shared, lock};
use crate::future::{BoxFuture, Race};

/// How often a waiter reads the positions of segments other nodes run.
/// One read serves every waiter of the processor on this node.
pub(super) const WAITING_POLL: Duration = Duration::from_millis(5);

impl Shared {
    /// Resolves once `runner` has processed the log up to `position`, the
    /// version it builds beside the serving one counts as done (queries do
    /// not read it), or it stopped on a failure. A version retired here
    /// waits on the one that serves the queries now.
    pub(super) async fn wait_until(
        &self,
        runner: &Runner,
        position: u64,
    ) -> Result<(), ProcessorsError> {
        loop {
            let listener = runner.progressed.listen();
            let (retired, building) = {
                let state = lock(&runner.state);
                (state.retired, state.building)
            };
            if retired {
                return self.wait_for_serving(runner, position).await;
            }
            if building || runner.position.load(Ordering::SeqCst) >= position {
                return Ok(());
            }
            if let Some(failure) = runner.stopped_failure() {
                return Err(ProcessorsError::Failed(failure));
            }
            if !Self::waits_on_other_nodes(runner, position) {
                listener.await;
                continue;
            }
            let listened: BoxFuture<'_, ()> = Box::pin(listener);
            let polled: BoxFuture<'_, ()> = Box::pin(futures_timer::Delay::new(WAITING_POLL));
            Race(vec![listened, polled]).await;
            self.refresh(runner).await;
        }
    }

    /// Resolves once every segment of the version of `runner`'s projection
    /// that serves the queries (a newer one, which other nodes run) has
    /// processed the log up to `position`, read from the store every poll.
    async fn wait_for_serving(
        &self,
        runner: &Runner,
        position: u64,
    ) -> Result<(), ProcessorsError> {
        let backend = self.views.backend();
        loop {
            let caught_up = async {
                let Some(serving) = backend.serving(runner.name()).await? else {
                    return Ok::<_, crate::view::ViewError>(false);
                };
                let segments = backend.segments(&serving).await?;
                Ok(!segments.is_empty()
                    && segments.iter().all(|segment| segment.position >= position))
            }
            .await;
            match caught_up {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // The next poll tries again, as for the segments of other nodes.
                Err(error) => {
                    tracing::debug!(processor = runner.name(), %error, "could not read the serving version's positions");
                }
            }
            futures_timer::Delay::new(WAITING_POLL).await;
        }
    }

    /// Whether a segment short of `position` is one this node does not run.
    fn waits_on_other_nodes(runner: &Runner, position: u64) -> bool {
        runner
            .segments
            .iter()
            .any(|slot| slot.position.load(Ordering::SeqCst) < position && slot.claim().is_none())
    }

    /// Reads the positions of the segments this node does not run from
    /// the store, unless another waiter did within the poll.
    async fn refresh(&self, runner: &Runner) {
        {
            let mut refreshed = lock(&runner.refreshed);
            if refreshed.is_some_and(|at| at.elapsed() < WAITING_POLL) {
                return;
            }
            *refreshed = Some(Instant::now());
        }
        let states = match self.views.backend().segments(runner.key()).await {
            Ok(states) => states,
            // The next poll tries again; the renewal reports an outage.
            Err(error) => {
                tracing::debug!(processor = runner.name(), %error, "could not read the segments' positions");
                return;
            }
        };
        let mut moved = false;
        for state in states {
            if let Some(slot) = runner.segments.get(state.segment as usize)
                && slot.claim().is_none()
            {
                moved |= slot.position.fetch_max(state.position, Ordering::SeqCst) < state.position;
            }
        }
        if moved {
            runner.recompute();
        }
    }
}
