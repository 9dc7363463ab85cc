//! Event processors: projections, process managers and event handlers that
//! follow the global log from a checkpoint, live or in catch-up runs.

mod handler;
mod projection;
mod race;
mod running;
mod status;
mod step;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

#[doc(hidden)]
pub use handler::DecodeFn;
pub(crate) use handler::HandlerRunner;
pub(crate) use projection::ProjectionRunner;
use race::{JoinAll, Race};
use running::Run;
pub use running::{RunError, Running, Shutdown};
pub use status::{
    FailureCause, ProcessorError, ProcessorFailure, ProcessorKind, ProcessorStatus,
    ProcessorsError, RebuildProgress, RetryPolicy,
};
pub(crate) use step::{Failed, Processor, Step, StepEnv};

use crate::future::BoxFuture;
use crate::store::{DynEventStore, ReadLimit};
use crate::view::{Projection, ViewStore};

/// A processor the app can be asked about by its type: every
/// `#[projection]` and `#[process_manager]` implements it, so
/// `app.processors().wait_for::<OrderSummary>(position)` needs no name.
pub trait NamedProcessor {
    /// The processor's name, which keys its checkpoint.
    const NAME: &'static str;
}

/// Tunables of the runners.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) batch: ReadLimit,
    pub(crate) poll_interval: Duration,
    pub(crate) retry: RetryPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: ReadLimit::events(500).with_bytes(8 << 20),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

struct Runner {
    processor: Box<dyn Processor>,
    /// The committed checkpoint as this app last saw it.
    position: AtomicU64,
    progressed: event_listener::Event,
    state: Mutex<RunnerState>,
    restarted: event_listener::Event,
}

#[derive(Default)]
struct RunnerState {
    failure: Option<ProcessorFailure>,
    stopped: bool,
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
}

impl Processors {
    pub(crate) fn new(
        processors: Vec<Box<dyn Processor>>,
        store: Arc<dyn DynEventStore>,
        views: ViewStore,
        app: Weak<dyn Any + Send + Sync>,
        appended: Arc<event_listener::Event>,
        settings: Settings,
    ) -> Self {
        let runners = processors
            .into_iter()
            .map(|processor| Runner {
                processor,
                position: AtomicU64::new(0),
                progressed: event_listener::Event::new(),
                state: Mutex::new(RunnerState::default()),
                restarted: event_listener::Event::new(),
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
                runs: Mutex::new(Vec::new()),
                settings,
            }),
        }
    }

    /// The names of the processors, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.shared
            .runners
            .iter()
            .map(|runner| runner.processor.name())
            .collect()
    }

    /// Runs every processor until the end of the log once. Returns the first
    /// failure; the failing processor stops where it failed and the others
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

    /// Follows the log with every processor until shut down: each wakes on
    /// the app's commits, on the store's notifications (PostgreSQL) and by
    /// polling. A failing processor is retried by the policy, then stopped
    /// with its failure in [`status`](Self::status) until
    /// [`restart`](Self::restart); the others carry on.
    ///
    /// The returned [`Running`] is a future to spawn on your runtime; its
    /// [`Shutdown`] asks the processors to finish their batch and stop.
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
            let loops: Vec<BoxFuture<'_, ()>> = shared
                .runners
                .iter()
                .map(|runner| Box::pin(shared.follow(runner, &this_run)) as BoxFuture<'_, ()>)
                .collect();
            JoinAll(loops).await;
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
        *lock(&runner.state) = RunnerState::default();
        runner.restarted.notify(usize::MAX);
        Ok(())
    }

    /// What every processor is doing.
    pub fn status(&self) -> Vec<ProcessorStatus> {
        self.shared
            .runners
            .iter()
            .map(|runner| {
                let state = lock(&runner.state);
                ProcessorStatus {
                    name: runner.processor.name(),
                    kind: runner.processor.kind(),
                    position: runner.position.load(Ordering::SeqCst),
                    failure: state.failure.clone(),
                    stopped: state.stopped,
                }
            })
            .collect()
    }

    /// Waits until processor `P` has processed the log up to `position`
    /// (needs [`run`](Self::run) going). Fails if it stops on a failure first.
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
            let runner = self.shared.runner(name)?;
            loop {
                let listener = runner.progressed.listen();
                if runner.position.load(Ordering::SeqCst) >= position {
                    break;
                }
                if let Some(failure) = stopped_failure(runner) {
                    return Err(ProcessorsError::Failed(failure));
                }
                listener.await;
            }
        }
        Ok(())
    }

    /// Waits until every processor has processed the log up to `position`.
    pub async fn wait_for_all(&self, position: u64) -> Result<(), ProcessorsError> {
        self.wait_for_named(position, &self.names()).await
    }

    /// Empties projection `P` and builds it again from the start of the
    /// log, calling `progress` after each batch. Shut [`run`](Self::run)
    /// down first, or the live runner and the rebuild take turns.
    pub async fn rebuild<P: Projection>(
        &self,
        progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorsError> {
        self.rebuild_named(P::NAME, progress).await
    }

    /// [`rebuild`](Self::rebuild) by name.
    pub async fn rebuild_named(
        &self,
        name: &str,
        mut progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorsError> {
        let shared = &*self.shared;
        let runner = shared.runner(name)?;
        let started = Instant::now();
        let failed = |error: ProcessorError| {
            ProcessorsError::Failed(shared.record_once(runner, Failed::after(0, error)))
        };
        let total = shared
            .store
            .last_position()
            .await
            .map_err(|error| failed(error.into()))?;
        let env = shared.env();
        runner.processor.reset(&env).await.map_err(failed)?;
        runner.position.store(0, Ordering::SeqCst);
        *lock(&runner.state) = RunnerState::default();
        let mut done = 0;
        loop {
            match runner.processor.step(&env, shared.settings.batch).await {
                Ok(Step::Advanced(position)) => {
                    done = position;
                    shared.progressed(runner, position);
                    progress(RebuildProgress {
                        done,
                        total,
                        elapsed: started.elapsed(),
                    });
                }
                Ok(Step::Idle(_)) => break,
                Err(error) => {
                    return Err(ProcessorsError::Failed(shared.record_once(runner, error)));
                }
            }
        }
        Ok(RebuildProgress {
            done,
            total,
            elapsed: started.elapsed(),
        })
    }
}

impl Shared {
    fn runner(&self, name: &str) -> Result<&Runner, ProcessorsError> {
        self.runners
            .iter()
            .find(|runner| runner.processor.name() == name)
            .ok_or_else(|| ProcessorsError::Unknown(name.to_owned()))
    }

    fn env(&self) -> StepEnv<'_> {
        StepEnv {
            store: &*self.store,
            views: &self.views,
            app: self.app.upgrade(),
        }
    }

    async fn catch_up_one(&self, runner: &Runner) -> Result<(), ProcessorFailure> {
        if let Some(failure) = stopped_failure(runner) {
            return Err(failure);
        }
        let env = self.env();
        loop {
            match runner.processor.step(&env, self.settings.batch).await {
                Ok(Step::Advanced(position)) => self.progressed(runner, position),
                Ok(Step::Idle(position)) => {
                    self.progressed(runner, position);
                    lock(&runner.state).failure = None;
                    return Ok(());
                }
                Err(failed) => return Err(self.record_once(runner, failed)),
            }
        }
    }

    /// Records the failure of a single attempt (a catch-up or a rebuild): a
    /// handler's failure stops the processor, the database's does not.
    fn record_once(&self, runner: &Runner, failed: Failed) -> ProcessorFailure {
        let stop = failed.error.cause() == FailureCause::Event;
        self.record(runner, failed, 1, stop)
    }

    /// The live loop of one processor.
    async fn follow(&self, runner: &Runner, run: &Run) {
        let policy = self.settings.retry;
        // Failures in a row: of the event at hand, and of the database.
        let mut attempts = 0;
        let mut outages = 0;
        while !run.is_stopping() {
            if lock(&runner.state).stopped {
                let restarted = runner.restarted.listen();
                if lock(&runner.state).stopped {
                    run.until_stopped(restarted).await;
                }
                attempts = 0;
                continue;
            }
            // After a handler failed, one event at a time, so the good events
            // before the bad one are committed and the failure names the bad one.
            let limit = if attempts == 0 {
                self.settings.batch
            } else {
                ReadLimit::events(1)
            };
            // Listen before reading, so a commit during the read still wakes us.
            let woken = self.appended.listen();
            let env = self.env();
            match runner.processor.step(&env, limit).await {
                Ok(step) => {
                    if attempts + outages > 0 {
                        attempts = 0;
                        outages = 0;
                        lock(&runner.state).failure = None;
                        tracing::info!(processor = runner.processor.name(), "processor resumed");
                    }
                    match step {
                        Step::Advanced(position) => self.progressed(runner, position),
                        Step::Idle(position) => {
                            self.progressed(runner, position);
                            let wait: Vec<BoxFuture<'_, ()>> = vec![
                                Box::pin(woken),
                                Box::pin(self.store.wait_for_appends()),
                                Box::pin(futures_timer::Delay::new(self.settings.poll_interval)),
                            ];
                            run.until_stopped(Race(wait)).await;
                        }
                    }
                }
                Err(failed) => {
                    let (tries, give_up, delay) = match failed.error.cause() {
                        FailureCause::Event => {
                            attempts += 1;
                            let give_up = attempts >= policy.max_attempts;
                            (attempts, give_up, policy.delay(attempts, policy.max_delay))
                        }
                        FailureCause::Database => {
                            outages += 1;
                            (outages, false, policy.delay(outages, policy.outage_delay))
                        }
                    };
                    let failure = self.record(runner, failed, tries, give_up);
                    tracing::warn!(
                        processor = failure.processor,
                        position = failure.position,
                        attempts = tries,
                        cause = ?failure.cause,
                        "{}",
                        failure.error
                    );
                    if !give_up {
                        run.until_stopped(futures_timer::Delay::new(delay)).await;
                    }
                }
            }
        }
    }

    fn progressed(&self, runner: &Runner, position: u64) {
        runner.position.fetch_max(position, Ordering::SeqCst);
        runner.progressed.notify(usize::MAX);
    }

    fn record(
        &self,
        runner: &Runner,
        failed: Failed,
        attempts: u32,
        stop: bool,
    ) -> ProcessorFailure {
        if let Some(committed) = failed.committed {
            self.progressed(runner, committed);
        }
        let position = failed
            .position
            .unwrap_or_else(|| runner.position.load(Ordering::SeqCst) + 1);
        let failure = ProcessorFailure {
            processor: runner.processor.name(),
            position,
            event_id: failed.event_id,
            cause: failed.error.cause(),
            error: Arc::new(failed.error),
            attempts,
        };
        let mut state = lock(&runner.state);
        state.failure = Some(failure.clone());
        state.stopped = stop;
        drop(state);
        // Waiters for this processor learn that it stopped.
        runner.progressed.notify(usize::MAX);
        failure
    }
}

fn stopped_failure(runner: &Runner) -> Option<ProcessorFailure> {
    let state = lock(&runner.state);
    if state.stopped {
        state.failure.clone()
    } else {
        None
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are replaced whole, never left half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for Processors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processors")
            .field("processors", &self.names())
            .finish_non_exhaustive()
    }
}
