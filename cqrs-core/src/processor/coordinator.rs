//! The coordinator of one processor on this node: at every lease renewal
//! it renews this node's claims, notes what the store says of every
//! segment, evens out the shares with the other live nodes, claims free
//! segments, and, for a projection, switches queries to a new version once
//! it has caught up.

use std::sync::atomic::Ordering;

use super::projection::key_version;
use super::segment::fair_share;
use super::{
    Claim, Failed, ProcessorError, ProcessorKind, Run, Runner, SegmentState, Shared, Slot, lock,
};
use crate::store::ReadLimit;
use crate::view::ViewError;

impl Shared {
    /// Creates the processor's segments and, for a projection no version
    /// of which serves queries yet, makes one serve them: the first version,
    /// if it has segments (it ran before versions were kept), else this one.
    /// Claims this node's id still holds from before it restarted are given
    /// up first, free at once for any node, this one included.
    pub(super) async fn prepare(&self, runner: &Runner) -> Result<(), ViewError> {
        if lock(&runner.state).prepared {
            return Ok(());
        }
        let backend = self.views.backend();
        self.follow_log().await?;
        backend.leave(runner.key(), &self.settings.node).await?;
        // Events handled twice are harmless to process managers (their
        // commands carry ids) and allowed to handlers (at least once); a
        // projection's views would count them twice.
        let kind = runner.processor.kind();
        let resegment = kind != ProcessorKind::Projection;
        backend
            .prepare(runner.key(), runner.segment_count(), resegment)
            .await?;
        if let Some(tables) = runner.processor.tables() {
            backend.ensure_tables(runner.key(), tables).await?;
        }
        let indexes = runner.processor.indexes();
        if !indexes.is_empty() {
            backend.ensure_indexes(runner.key(), indexes).await?;
        }
        if kind == ProcessorKind::Projection && backend.serving(runner.name()).await?.is_none() {
            let first = runner.name();
            let adopted = if runner.key() != first && !backend.segments(first).await?.is_empty() {
                first
            } else {
                runner.key()
            };
            backend.switch(runner.name(), None, adopted).await?;
        }
        lock(&runner.state).prepared = true;
        Ok(())
    }

    /// Checks that the read side follows this app's log (by its first
    /// event), recording it the first time. Views in memory live with
    /// their app, and an empty log has nothing to tell yet; nor has a log
    /// that cannot be read now, which the processor's own reads report.
    async fn follow_log(&self) -> Result<(), ViewError> {
        if self.views.sql().is_none() {
            return Ok(());
        }
        match self.store.read_all(1, ReadLimit::events(1)).await {
            Ok(first) => match first.first() {
                Some(first) => {
                    let log_id = first.event_id.to_string();
                    self.views.backend().follow_log(&log_id).await
                }
                None => Ok(()),
            },
            Err(error) => {
                tracing::debug!(%error, "could not read the log's first event to check the read side");
                Ok(())
            }
        }
    }

    /// Renews, rebalances and switches versions every lease renewal.
    pub(super) async fn coordinate(&self, runner: &Runner, run: &Run) {
        let mut outages = 0;
        while !run.is_stopping() && !lock(&runner.state).retired {
            if lock(&runner.state).stopped {
                let restarted = runner.restarted.listen();
                if lock(&runner.state).stopped {
                    run.until_stopped(restarted).await;
                }
                continue;
            }
            let delay = match self.tick(runner).await {
                Ok(()) => {
                    if outages > 0 {
                        outages = 0;
                        lock(&runner.state).failure = None;
                    }
                    self.settings.lease.renewal
                }
                // Tried again at every renewal, whatever it is: a database
                // that is down comes back, a segment count that does not fit
                // fits once the nodes that run the old one are gone.
                Err(error) => {
                    outages += 1;
                    let failed = Failed::checkpoint(ProcessorError::View(error));
                    let failure = runner.record(failed, outages, false);
                    tracing::warn!(processor = runner.name(), "{failure}");
                    let policy = self.settings.retry;
                    policy
                        .delay(outages, policy.outage_delay)
                        .min(self.settings.lease.renewal)
                }
            };
            run.until_stopped(futures_timer::Delay::new(delay)).await;
        }
        // A retired version gives its segments up at once.
        for slot in &runner.segments {
            slot.wake.notify(usize::MAX);
        }
    }

    /// One round: renews the claims, notes the segments, switches a
    /// projection's version when due, and evens out the shares.
    async fn tick(&self, runner: &Runner) -> Result<(), ViewError> {
        self.prepare(runner).await?;
        let live = self.renew_claims(runner).await?;
        match self.store.last_position().await {
            Ok(head) => {
                self.head.fetch_max(head, Ordering::SeqCst);
            }
            Err(error) => tracing::debug!(%error, "could not read the log's head for the lag"),
        }
        let states = self.views.backend().segments(runner.key()).await?;
        self.note_segments(runner, &states);
        if runner.processor.kind() == ProcessorKind::Projection
            && self.switch_versions(runner).await?
        {
            return Ok(());
        }
        self.even_out(runner, &live, &states).await
    }

    /// Beats this node's heartbeat and renews its claims, letting go of
    /// those another node took; returns the live nodes.
    async fn renew_claims(&self, runner: &Runner) -> Result<Vec<String>, ViewError> {
        let backend = self.views.backend();
        let settings = &self.settings;
        let (key, node, lease) = (runner.key(), &*settings.node, settings.lease.length);
        let live = backend.heartbeat(key, node, lease).await?;
        let held = backend.renew(key, node, lease).await?;
        for slot in &runner.segments {
            if let Some(claim) = slot.claim()
                && !held.contains(&claim)
            {
                tracing::info!(
                    processor = runner.name(),
                    segment = slot.index,
                    "segment lost to another node"
                );
                slot.lose(claim);
            }
        }
        Ok(live)
    }

    /// Notes what the store says of each segment (position, owner, parked
    /// events), and the processor's lag.
    fn note_segments(&self, runner: &Runner, states: &[SegmentState]) {
        for state in states {
            let Some(slot) = runner.segments.get(state.segment as usize) else {
                continue;
            };
            slot.position.store(state.position, Ordering::SeqCst);
            *lock(&slot.owner) = state.owner.clone().filter(|_| !state.expired);
            slot.parked.store(state.parked, Ordering::SeqCst);
            // Events to retry, or streams this node holds back: another
            // process may have decided about them (a skip of a lone event
            // leaves none to retry, and an event parked behind it after the
            // decision waits for its turn), so the segment looks again.
            let holding = !lock(&slot.blocked).is_empty();
            if (state.retrying > 0 || holding) && slot.claim().is_some() {
                slot.retry.store(true, Ordering::SeqCst);
                slot.wake.notify(usize::MAX);
            }
        }
        runner.recompute();
        crate::telemetry::processor_lag(
            runner.name(),
            self.head
                .load(Ordering::SeqCst)
                .saturating_sub(runner.position.load(Ordering::SeqCst)),
            runner
                .segments
                .iter()
                .map(|slot| slot.parked.load(Ordering::SeqCst))
                .sum(),
        );
    }

    /// Evens out the segments among the `live` nodes, ⌊N/K⌋ or ⌈N/K⌉ each:
    /// asks its loops to release those over this node's share, or claims
    /// free ones up to it.
    async fn even_out(
        &self,
        runner: &Runner,
        live: &[String],
        states: &[SegmentState],
    ) -> Result<(), ViewError> {
        let backend = self.views.backend();
        let settings = &self.settings;
        let (key, node, lease) = (runner.key(), &*settings.node, settings.lease.length);
        let rank = live
            .iter()
            .position(|other| other == node)
            .unwrap_or(live.len());
        let share = fair_share(runner.segment_count(), live.len().max(rank + 1), rank) as usize;
        let owned: Vec<&Slot> = runner
            .segments
            .iter()
            .filter(|slot| slot.claim().is_some() && !slot.release.load(Ordering::SeqCst))
            .collect();
        if owned.len() > share {
            for slot in owned.iter().rev().take(owned.len() - share) {
                slot.release.store(true, Ordering::SeqCst);
                slot.wake.notify(usize::MAX);
            }
            return Ok(());
        }
        let mut missing = share - owned.len();
        let mut claimed = Vec::new();
        for state in states.iter().filter(|state| state.is_free()) {
            if missing == 0 {
                break;
            }
            let Some(slot) = runner.segments.get(state.segment as usize) else {
                continue;
            };
            if slot.claim().is_some() {
                continue;
            }
            if let Some(claim) = backend.claim(key, state.segment, node, lease).await? {
                claimed.push((slot, claim, state.retrying > 0));
                missing -= 1;
            }
        }
        if claimed.is_empty() {
            return Ok(());
        }
        // One read for every segment claimed: a former owner cannot park
        // anything in them any more (its token is stale).
        let claims: Vec<(&Slot, Claim)> = claimed
            .iter()
            .map(|&(slot, claim, _)| (slot, claim))
            .collect();
        self.take(runner, &claims).await?;
        for (slot, claim, retrying) in claimed {
            slot.retry.store(retrying, Ordering::SeqCst);
            tracing::info!(
                processor = runner.name(),
                segment = claim.segment,
                token = claim.token,
                "segment claimed"
            );
            slot.wake.notify(usize::MAX);
        }
        Ok(())
    }

    /// Gives each claim to its slot, with the streams the segment's parked
    /// events hold up; if those cannot be read, gives the claims up, as the
    /// segments' streams could not be kept in order.
    pub(super) async fn take(
        &self,
        runner: &Runner,
        claims: &[(&Slot, Claim)],
    ) -> Result<(), ViewError> {
        let backend = self.views.backend();
        let parked = match backend.parked(runner.key()).await {
            Ok(parked) => parked,
            Err(error) => {
                for (_, claim) in claims {
                    let _ = backend.release(runner.key(), *claim).await;
                }
                tracing::warn!(processor = runner.name(), %error, "could not read the parked events");
                return Err(error);
            }
        };
        for (slot, claim) in claims {
            *lock(&slot.blocked) = parked
                .iter()
                .filter(|event| event.segment == claim.segment && event.is_blocking())
                .map(|event| (event.stream(), event.state))
                .collect();
            slot.release.store(false, Ordering::SeqCst);
            *lock(&slot.claim) = Some(*claim);
        }
        Ok(())
    }

    /// For a projection: retires this version if a newer one serves the
    /// queries, or switches the queries to it once it has caught up with
    /// where the serving one was at the previous renewal (a serving version
    /// that keeps following a busy log is never caught exactly), and drops
    /// the old one's views. True if retired.
    async fn switch_versions(&self, runner: &Runner) -> Result<bool, ViewError> {
        let backend = self.views.backend();
        let (name, key) = (runner.name(), runner.key());
        let Some(serving) = backend.serving(name).await? else {
            return Ok(false);
        };
        if serving == key {
            let mut state = lock(&runner.state);
            state.building = false;
            state.serving_at = None;
            return Ok(false);
        }
        if key_version(&serving) > runner.processor.version() {
            lock(&runner.state).retired = true;
            tracing::info!(
                processor = name,
                serving,
                "a newer version serves the queries: retired"
            );
            backend.retire(key).await?;
            return Ok(true);
        }
        let serving_at = backend
            .segments(&serving)
            .await?
            .iter()
            .map(|segment| segment.position)
            .min()
            .unwrap_or(0);
        let before = {
            let mut state = lock(&runner.state);
            state.building = true;
            state.serving_at.replace(serving_at).unwrap_or(serving_at)
        };
        let at = runner.position.load(Ordering::SeqCst);
        if at >= serving_at.min(before) && backend.switch(name, Some(&serving), key).await? {
            tracing::info!(
                processor = name,
                from = serving,
                to = key,
                position = at,
                "queries switched to the new version"
            );
            lock(&runner.state).building = false;
            backend.retire(&serving).await?;
        }
        Ok(false)
    }
}
