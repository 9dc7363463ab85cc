//! [`Runner`]: one processor of the app and its segments ([`Slot`]s) as
//! this node sees them, and what it records of its progress and failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::{Claim, Failed, FailureCause, ParkState, Processor, ProcessorFailure, Work, lock};

/// One processor of the app and its segments, as this node sees them.
pub(super) struct Runner {
    pub(super) processor: Box<dyn Processor>,
    pub(super) segments: Vec<Slot>,
    /// The slowest segment's committed checkpoint, as this app last saw it.
    pub(super) position: AtomicU64,
    pub(super) progressed: event_listener::Event,
    pub(super) state: Mutex<RunnerState>,
    pub(super) restarted: event_listener::Event,
    /// Batches rejected because another node had claimed their segment.
    pub(super) fenced: AtomicU64,
    /// Batches run again because another segment had changed their views.
    pub(super) conflicts: AtomicU64,
    /// When a waiter last read the segments' positions from the store:
    /// waiters share one read per poll.
    pub(super) refreshed: Mutex<Option<std::time::Instant>>,
}

#[derive(Default)]
pub(super) struct RunnerState {
    pub(super) failure: Option<ProcessorFailure>,
    pub(super) stopped: bool,
    /// A newer version of the projection serves the queries: this one no
    /// longer runs.
    pub(super) retired: bool,
    /// An older version of the projection serves the queries while this
    /// one builds beside it.
    pub(super) building: bool,
    /// Where the serving version was at the previous renewal, while this
    /// one builds.
    pub(super) serving_at: Option<u64>,
    /// Whether its segments exist in the store with its count.
    pub(super) prepared: bool,
}

/// One segment of a processor on this node.
pub(super) struct Slot {
    pub(super) index: u32,
    /// This node's claim, while it holds one.
    pub(super) claim: Mutex<Option<Claim>>,
    /// Asked to give the claim up after its batch, to even out the shares.
    pub(super) release: AtomicBool,
    /// Parked events of the segment were asked to be retried.
    pub(super) retry: AtomicBool,
    pub(super) position: AtomicU64,
    pub(super) owner: Mutex<Option<String>>,
    pub(super) parked: AtomicU64,
    /// When the newest event a step of this node read was recorded, in
    /// milliseconds since the epoch.
    pub(super) newest: AtomicI64,
    /// How old its newest event was when its last batch was done, in
    /// seconds (f64 bits); 0 once caught up.
    pub(super) delay: AtomicU64,
    /// The segment's streams with parked events, while this node owns it.
    pub(super) blocked: Mutex<HashMap<(String, String), ParkState>>,
    /// Woken when the slot gains a claim or a retry is asked.
    pub(super) wake: event_listener::Event,
}

impl Slot {
    pub(super) fn new(index: u32) -> Self {
        Self {
            index,
            claim: Mutex::new(None),
            release: AtomicBool::new(false),
            retry: AtomicBool::new(false),
            position: AtomicU64::new(0),
            owner: Mutex::new(None),
            parked: AtomicU64::new(0),
            newest: AtomicI64::new(0),
            delay: AtomicU64::new(0),
            blocked: Mutex::new(HashMap::new()),
            wake: event_listener::Event::new(),
        }
    }

    /// How old, in seconds, the newest event a step read is now.
    pub(super) fn newest_age(&self) -> f64 {
        let newest = self.newest.load(Ordering::SeqCst);
        let now = chrono::Utc::now().timestamp_millis();
        now.saturating_sub(newest).max(0) as f64 / 1000.0
    }

    pub(super) fn claim(&self) -> Option<Claim> {
        *lock(&self.claim)
    }

    /// Drops the claim if it is still `claim`.
    pub(super) fn lose(&self, claim: Claim) {
        let mut held = lock(&self.claim);
        if *held == Some(claim) {
            *held = None;
            lock(&self.blocked).clear();
        }
    }
}

impl Runner {
    pub(super) fn work<'a>(&'a self, slot: &'a Slot, claim: Claim) -> Work<'a> {
        Work {
            key: self.processor.key(),
            claim,
            segments: self.segment_count(),
            blocked: &slot.blocked,
            newest: &slot.newest,
        }
    }

    pub(super) fn segment_count(&self) -> u32 {
        u32::try_from(self.segments.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn name(&self) -> &'static str {
        self.processor.name()
    }

    pub(super) fn key(&self) -> &str {
        self.processor.key()
    }

    /// Records the failure of a single attempt (a catch-up or a rebuild): a
    /// handler's failure stops the processor, the database's does not.
    pub(super) fn record_once(&self, failed: Failed) -> ProcessorFailure {
        let stop = failed.error.cause() == FailureCause::Event;
        self.record(failed, 1, stop)
    }

    /// A segment committed up to `position`.
    pub(super) fn progressed(&self, slot: &Slot, position: u64) {
        slot.position.fetch_max(position, Ordering::SeqCst);
        self.recompute();
    }

    /// The runner's position is its slowest segment's.
    pub(super) fn recompute(&self) {
        let slowest = self
            .segments
            .iter()
            .map(|slot| slot.position.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        self.position.fetch_max(slowest, Ordering::SeqCst);
        self.progressed.notify(usize::MAX);
    }

    /// Records a failure after `attempts`; with `stop`, the processor
    /// waits for a restart.
    pub(super) fn record(&self, failed: Failed, attempts: u32, stop: bool) -> ProcessorFailure {
        let position = failed
            .position
            .unwrap_or_else(|| self.position.load(Ordering::SeqCst) + 1);
        let failure = ProcessorFailure {
            processor: self.name(),
            position,
            event_id: failed.event_id,
            cause: failed.error.cause(),
            error: Arc::new(failed.error),
            attempts,
        };
        let mut state = lock(&self.state);
        state.failure = Some(failure.clone());
        state.stopped = stop;
        drop(state);
        // Waiters for this processor learn that it stopped.
        self.progressed.notify(usize::MAX);
        failure
    }

    /// The failure it stopped at, if it waits for a restart.
    pub(super) fn stopped_failure(&self) -> Option<ProcessorFailure> {
        let state = lock(&self.state);
        if state.stopped {
            state.failure.clone()
        } else {
            None
        }
    }
}
