//! Event processors: projections, process managers and event handlers that
//! follow the global log from their segments' checkpoints, live or in
//! catch-up runs, shared by every instance of the app that runs them.
//!
//! A processor has one or more *segments*; every event goes to one of them
//! by a stable hash of its stream, so one stream's events are handled in log
//! order by one owner. Each running instance is a *node* that claims
//! segments with a *lease* in the views' database, renews it while it works
//! and gives it up when it stops; a lease that runs out is taken over by
//! another node, and the nodes even out their shares. Every claim carries a
//! fencing token, and a batch commits only while its token is current. An
//! event whose handler still fails after its retries is *parked*: its
//! stream waits behind it, every other stream goes on.

mod catch_up;
mod coordinator;
pub(crate) mod delivery;
mod handler;
mod live;
mod parking;
mod projection;
mod receiving;
mod runner;
mod running;
mod segment;
mod status;
mod step;
mod tables;
mod waiting;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

#[doc(hidden)]
pub use handler::DecodeFn;
pub(crate) use handler::HandlerRunner;
pub(crate) use projection::ProjectionRunner;
use runner::{Runner, RunnerState, Slot};
pub(crate) use running::Run;
pub use running::{RunError, Running, Shutdown};
pub use segment::{Lease, segment_of};
pub(crate) use status::caused_by_outage;
pub use status::{
    FailureCause, ProcessorError, ProcessorFailure, ProcessorKind, ProcessorStatus,
    ProcessorsError, RebuildProgress, RetryPolicy, SegmentStatus,
};
pub(crate) use step::{Failed, Processor, Step, StepEnv, Work};
pub(crate) use tables::TableProjectionRunner;

use crate::store::{DynEventStore, ReadLimit};
use crate::view::ViewStore;
pub use crate::view::{Claim, Decision, ParkState, ParkedEvent, SegmentState, Settled};

/// A processor the app can be asked about by its type: every
/// `#[projection]` and `#[process_manager]` implements it, so
/// `app.processors().wait_for::<OrderSummary>(position)` needs no name.
pub trait NamedProcessor {
    /// The processor's name, which keys its checkpoint.
    const NAME: &'static str;
}

/// Tunables of the runners.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) batch: ReadLimit,
    pub(crate) poll_interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) lease: Lease,
    /// This instance's id among the nodes that share the processors.
    pub(crate) node: Arc<str>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: ReadLimit::events(500).with_bytes(8 << 20),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            lease: Lease::default(),
            node: default_node().into(),
        }
    }
}

/// A node id unique to this process: host, process id and a random part.
fn default_node() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &random[random.len() - 8..]
    )
}

/// The projections, process managers and event handlers of an app, run
/// from the global log.
///
/// Nothing runs until [`run`](Self::run) (live, until shut down) or
/// [`catch_up`](Self::catch_up) (once, up to the end of the log) is awaited;
/// the futures are tied to no async runtime, so spawn `run()` on yours.
#[derive(Clone)]
pub struct Processors {
    shared: Arc<Shared>,
}

struct Shared {
    runners: Vec<Runner>,
    store: Arc<dyn DynEventStore>,
    views: ViewStore,
    app: Weak<dyn Any + Send + Sync>,
    /// Woken after every append the app makes.
    appended: Arc<event_listener::Event>,
    running: AtomicBool,
    /// The runs made by [`Processors::run`], for [`Processors::shutdown`].
    runs: Mutex<Vec<Weak<Run>>>,
    settings: Settings,
    /// The log's last position as a coordinator last read it.
    head: AtomicU64,
}

impl Processors {
    /// `processors`, each with the number of segments it runs with.
    pub(crate) fn new(
        processors: Vec<(Box<dyn Processor>, u32)>,
        store: Arc<dyn DynEventStore>,
        views: ViewStore,
        app: Weak<dyn Any + Send + Sync>,
        appended: Arc<event_listener::Event>,
        settings: Settings,
    ) -> Self {
        let runners = processors
            .into_iter()
            .map(|(processor, segments)| Runner {
                processor,
                segments: (0..segments.max(1)).map(Slot::new).collect(),
                position: AtomicU64::new(0),
                progressed: event_listener::Event::new(),
                state: Mutex::new(RunnerState::default()),
                restarted: event_listener::Event::new(),
                fenced: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                refreshed: Mutex::new(None),
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                runners,
                store,
                views,
                app,
                appended,
                running: AtomicBool::new(false),
                head: AtomicU64::new(0),
                runs: Mutex::new(Vec::new()),
                settings,
            }),
        }
    }

    /// The names of the processors, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.shared.runners.iter().map(Runner::name).collect()
    }

    /// This instance's node id, which its claims carry.
    pub fn node(&self) -> &str {
        &self.shared.settings.node
    }

    /// The leases this instance's claims run on.
    pub(crate) fn lease(&self) -> Lease {
        self.shared.settings.lease
    }

    /// How the app's processors are retried, which its consumers follow too.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.shared.settings.retry
    }

    /// Runs every processor up to the end of the log as it is now, once:
    /// the segments no other live node holds here, and for those another
    /// holds, waits until it got there (or its lease ran out, if it died, and
    /// then runs them here). Returns the first failure; the failing
    /// processor stops where it failed (nothing is parked) and the others
    /// still run to the end.
    pub async fn catch_up(&self) -> Result<(), ProcessorFailure> {
        let mut first = None;
        for runner in &self.shared.runners {
            if let Err(failure) = self.shared.catch_up_one(runner).await {
                first.get_or_insert(failure);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Follows the log with every processor until shut down, sharing their
    /// segments with the other nodes that run them: each segment this node
    /// owns wakes on the app's commits, on the store's notifications
    /// (PostgreSQL) and by polling. A failing event is retried by the
    /// policy, then parked; the processor goes on with the other streams.
    ///
    /// The returned [`Running`] is a future to spawn on your runtime; its
    /// [`Shutdown`] asks the processors to finish their batch, give up their
    /// claims and stop.
    pub fn run(&self) -> Running {
        let shared = Arc::clone(&self.shared);
        let run = Arc::new(Run::default());
        let this_run = Arc::clone(&run);
        let mut runs = lock(&self.shared.runs);
        runs.retain(|run| run.upgrade().is_some_and(|run| !run.has_ended()));
        runs.push(Arc::downgrade(&run));
        drop(runs);
        Running::new(run, async move {
            if shared.running.swap(true, Ordering::SeqCst) {
                return Err(RunError::AlreadyRunning);
            }
            shared.follow_all(&this_run).await;
            shared.running.store(false, Ordering::SeqCst);
            Ok(())
        })
    }

    /// Asks every [`Running`] made by [`run`](Self::run) to finish its
    /// batches and return, and waits until they have; one not yet polled
    /// returns as soon as it is.
    pub async fn shutdown(&self) {
        let runs: Vec<Arc<Run>> = lock(&self.shared.runs)
            .drain(..)
            .filter_map(|run| run.upgrade())
            .collect();
        for run in runs {
            Shutdown::of(run).now().await;
        }
    }

    /// Clears the failure of a stopped processor so it tries again.
    pub fn restart(&self, name: &str) -> Result<(), ProcessorsError> {
        let runner = self.shared.runner(name)?;
        let mut state = lock(&runner.state);
        state.failure = None;
        state.stopped = false;
        drop(state);
        runner.restarted.notify(usize::MAX);
        Ok(())
    }

    /// What every processor is doing, its segments as this node last saw
    /// them (their owners are refreshed at every lease renewal).
    pub fn status(&self) -> Vec<ProcessorStatus> {
        let node = &*self.shared.settings.node;
        self.shared
            .runners
            .iter()
            .map(|runner| {
                let state = lock(&runner.state);
                let segments: Vec<SegmentStatus> = runner
                    .segments
                    .iter()
                    .map(|slot| SegmentStatus {
                        segment: slot.index,
                        position: slot.position.load(Ordering::SeqCst),
                        owner: lock(&slot.owner).clone(),
                        owned_here: slot.claim().is_some(),
                        parked: slot.parked.load(Ordering::SeqCst),
                    })
                    .collect();
                let position = runner.position.load(Ordering::SeqCst);
                ProcessorStatus {
                    name: runner.name(),
                    lag: self
                        .shared
                        .head
                        .load(Ordering::SeqCst)
                        .saturating_sub(position),
                    kind: runner.processor.kind(),
                    version: runner.processor.version(),
                    node: node.to_owned(),
                    position,
                    parked: segments.iter().map(|segment| segment.parked).sum(),
                    segments,
                    fenced: runner.fenced.load(Ordering::SeqCst),
                    conflicts: runner.conflicts.load(Ordering::SeqCst),
                    failure: state.failure.clone(),
                    stopped: state.stopped,
                    retired: state.retired,
                    building: state.building,
                }
            })
            .collect()
    }

    /// The events processor `name` parked, by position, with those already
    /// retried or skipped.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, ProcessorsError> {
        let runner = self.shared.runner(name)?;
        self.shared
            .views
            .backend()
            .parked(runner.key())
            .await
            .map_err(|error| self.shared.failed_call(runner, error.into()))
    }

    /// Retries the parked events of the stream of the one at `position`,
    /// in order, on whichever node owns its segment. False if no event is
    /// parked there.
    pub async fn retry_parked(&self, name: &str, position: u64) -> Result<bool, ProcessorsError> {
        self.decide(name, position, Decision::Retry).await
    }

    /// Skips the parked event at `position` for good (the decision is
    /// kept); the events of its stream waiting behind it are handled next.
    pub async fn skip_parked(&self, name: &str, position: u64) -> Result<bool, ProcessorsError> {
        self.decide(name, position, Decision::Skip).await
    }

    async fn decide(
        &self,
        name: &str,
        position: u64,
        decision: Decision,
    ) -> Result<bool, ProcessorsError> {
        let runner = self.shared.runner(name)?;
        let decided = self
            .shared
            .views
            .backend()
            .decide(runner.key(), position, decision)
            .await
            .map_err(|error| self.shared.failed_call(runner, error.into()))?;
        if decided {
            tracing::info!(
                processor = name,
                position,
                ?decision,
                "parked event decided"
            );
            // The owner, if it is this node, takes it up at once.
            for slot in &runner.segments {
                slot.retry.store(true, Ordering::SeqCst);
                slot.wake.notify(usize::MAX);
            }
        }
        Ok(decided)
    }

    /// Waits until processor `P` has processed the log up to `position` in
    /// every segment (needs [`run`](Self::run) going here or on other
    /// nodes). Fails if it stops on a failure first.
    ///
    /// A segment this node runs reports its progress as it commits. While
    /// the wait needs a segment this node does not run, it reads the
    /// segments' positions from the store every 5 ms (one read for all the
    /// waiters of the processor on this node), so it ends a few
    /// milliseconds after the other node committed, not at the next lease
    /// renewal.
    pub async fn wait_for<P: NamedProcessor>(&self, position: u64) -> Result<(), ProcessorsError> {
        self.wait_for_named(position, &[P::NAME]).await
    }

    /// [`wait_for`](Self::wait_for) by name, for names from outside the
    /// program (a command line) and for event handlers (named by their path).
    pub async fn wait_for_named(
        &self,
        position: u64,
        names: &[&str],
    ) -> Result<(), ProcessorsError> {
        for name in names {
            for runner in self.shared.runners_named(name)? {
                self.shared.wait_until(runner, position).await?;
            }
        }
        Ok(())
    }

    /// Waits until every processor has processed the log up to `position`.
    pub async fn wait_for_all(&self, position: u64) -> Result<(), ProcessorsError> {
        self.wait_for_named(position, &self.names()).await
    }

    /// Empties projection `P` and builds it again from the start of the
    /// log on this node, calling `progress` after each batch. Queries see
    /// it empty until it is done: to rebuild beside the serving views,
    /// declare a new version instead. Shut [`run`](Self::run) down first;
    /// segments another live node holds make it fail.
    pub async fn rebuild<P: NamedProcessor>(
        &self,
        progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorsError> {
        self.rebuild_named(<P as NamedProcessor>::NAME, progress)
            .await
    }

    /// [`rebuild`](Self::rebuild) by name.
    pub async fn rebuild_named(
        &self,
        name: &str,
        progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorsError> {
        let runner = self.shared.runner(name)?;
        if runner.processor.kind() != ProcessorKind::Projection {
            let error = ProcessorError::Unsupported {
                processor: runner.name(),
                kind: runner.processor.kind(),
                reason: "only projections are rebuilt",
            };
            return Err(self.shared.failed_call(runner, error));
        }
        self.shared.rebuild(runner, progress).await
    }
}

impl Shared {
    fn runner(&self, name: &str) -> Result<&Runner, ProcessorsError> {
        self.runners_named(name)?
            .into_iter()
            .max_by_key(|runner| runner.processor.version())
            .ok_or_else(|| ProcessorsError::Unknown(name.to_owned()))
    }

    /// Every version of the processor `name` this app runs.
    fn runners_named(&self, name: &str) -> Result<Vec<&Runner>, ProcessorsError> {
        let runners: Vec<&Runner> = self
            .runners
            .iter()
            .filter(|runner| runner.name() == name || runner.key() == name)
            .collect();
        if runners.is_empty() {
            return Err(ProcessorsError::Unknown(name.to_owned()));
        }
        Ok(runners)
    }

    fn env(&self) -> StepEnv<'_> {
        StepEnv {
            store: &*self.store,
            views: &self.views,
            app: self.app.upgrade(),
        }
    }

    /// A failure of a call on a processor, recorded as one attempt.
    fn failed_call(&self, runner: &Runner, error: ProcessorError) -> ProcessorsError {
        ProcessorsError::Failed(runner.record_once(Failed::after(0, error)))
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are replaced whole, never left half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for Processors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processors")
            .field("processors", &self.names())
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}
