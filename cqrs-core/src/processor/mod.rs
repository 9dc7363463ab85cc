//! Event processors: projections and process managers that follow the
//! global log from a checkpoint, live or in catch-up runs.

mod process_manager;
mod projection;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub(crate) use process_manager::ProcessManagerRunner;
pub use process_manager::{ProcessContext, ProcessManager};
pub(crate) use projection::ProjectionRunner;

use crate::app::{Dispatcher, Inner};
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::store::{DynEventStore, StoreError};
use crate::view::{BoxFuture, ReadModels, ViewError};

/// Why an event processor could not process an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// A handler returned an error.
    #[error("{0}")]
    Handler(String),
    /// The event could not be decoded.
    #[error(transparent)]
    Decode(Box<DecodeError>),
    /// The read-model store failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The app that owns the processor is gone.
    #[error("the app was dropped")]
    AppDropped,
}

impl From<Box<DecodeError>> for ProcessorError {
    fn from(error: Box<DecodeError>) -> Self {
        Self::Decode(error)
    }
}

/// Which kind of processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// Keeps read-model documents.
    Projection,
    /// Sends commands.
    ProcessManager,
}

/// Where a processor stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorFailure {
    /// The processor.
    pub processor: &'static str,
    /// The position of the event it could not process (0 when the failure
    /// was reading the log itself).
    pub position: u64,
    /// That event's id, when known.
    pub event_id: Option<Uuid>,
    /// What went wrong, the last time.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

impl fmt::Display for ProcessorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processor {} stopped at position {} after {} attempts: {}",
            self.processor, self.position, self.attempts, self.error
        )
    }
}

impl std::error::Error for ProcessorFailure {}

/// What a processor is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorStatus {
    /// Its name.
    pub name: &'static str,
    /// Projection or process manager.
    pub kind: ProcessorKind,
    /// The position it has processed up to, as last seen by this app.
    pub position: u64,
    /// Set while it retries or after it gave up; cleared by a success or
    /// [`Processors::restart`].
    pub failure: Option<ProcessorFailure>,
    /// True once it gave up: it waits for [`Processors::restart`].
    pub stopped: bool,
}

/// How a failing processor is retried before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at one event, the first included, before the processor stops.
    pub max_attempts: u32,
    /// The pause after the first failure; it doubles after each next one.
    pub first_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The progress of a rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events of the log processed so far.
    pub done: u64,
    /// Events in the log when the rebuild started.
    pub total: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

impl RebuildProgress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Why waiting for processors ended early.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No processor of the app has this name.
    #[error("no processor is named `{0}`")]
    Unknown(String),
    /// The processor stopped on a failure before reaching the position.
    #[error(transparent)]
    Failed(ProcessorFailure),
}

/// What the runner needs from a projection or process manager.
pub(crate) trait Processor: Send + Sync {
    fn name(&self) -> &'static str;

    fn kind(&self) -> ProcessorKind;

    /// Processes up to `limit` events after the checkpoint and commits.
    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Step, Failed>>;

    /// Empties the read model and sets the checkpoint back to 0.
    fn reset<'a>(&'a self, env: &'a StepEnv<'a>) -> BoxFuture<'a, Result<(), ProcessorError>>;
}

/// What a step works with.
pub(crate) struct StepEnv<'a> {
    pub(crate) store: &'a dyn DynEventStore,
    pub(crate) read_models: &'a ReadModels,
    pub(crate) app: &'a Weak<Inner>,
}

/// What one step came to.
pub(crate) enum Step {
    /// Processed events up to this position.
    Advanced(u64),
    /// Nothing after this position.
    Idle(u64),
}

/// A step that failed at an event.
pub(crate) struct Failed {
    pub(crate) position: u64,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) error: ProcessorError,
}

impl Failed {
    pub(crate) fn at(envelope: &Envelope, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: envelope.position,
            event_id: Some(envelope.event_id),
            error: error.into(),
        }
    }

    pub(crate) fn reading(error: impl Into<ProcessorError>) -> Self {
        Self {
            position: 0,
            event_id: None,
            error: error.into(),
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

/// The projections and process managers of an app, run from the global log.
///
/// Nothing runs until [`run`](Self::run) (live, until [`stop`](Self::stop)) or
/// [`catch_up`](Self::catch_up) (once, up to the end of the log) is awaited;
/// the futures are tied to no async runtime, so spawn `run()` on yours.
#[derive(Clone)]
pub struct Processors {
    inner: Arc<Shared>,
}

struct Shared {
    runners: Vec<Runner>,
    store: Arc<dyn DynEventStore>,
    read_models: Option<ReadModels>,
    app: Weak<Inner>,
    appended: Arc<event_listener::Event>,
    stopping: AtomicBool,
    stopped: event_listener::Event,
    settings: Settings,
}

/// Tunables of the runners.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) retry: RetryPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

impl Processors {
    pub(crate) fn new(
        processors: Vec<Box<dyn Processor>>,
        store: Arc<dyn DynEventStore>,
        read_models: Option<ReadModels>,
        app: Weak<Inner>,
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
            inner: Arc::new(Shared {
                runners,
                store,
                read_models,
                app,
                appended,
                stopping: AtomicBool::new(false),
                stopped: event_listener::Event::new(),
                settings,
            }),
        }
    }

    pub(crate) fn has_any(&self) -> bool {
        !self.inner.runners.is_empty()
    }

    /// The names of the processors, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner
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
        for runner in &self.inner.runners {
            if let Err(failure) = self.catch_up_one(runner).await {
                first.get_or_insert(failure);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Follows the log with every processor until [`stop`](Self::stop): each
    /// wakes on this app's commits, on the store's notifications (PostgreSQL)
    /// and by polling. A failing processor is retried by the policy, then
    /// stopped with its failure in [`status`](Self::status) until
    /// [`restart`](Self::restart); the others carry on.
    pub async fn run(&self) {
        self.inner.stopping.store(false, Ordering::SeqCst);
        let loops: Vec<BoxFuture<'_, ()>> = self
            .inner
            .runners
            .iter()
            .map(|runner| Box::pin(self.follow(runner)) as BoxFuture<'_, ()>)
            .collect();
        JoinAll(loops).await;
    }

    /// Asks [`run`](Self::run) to return after the batches in progress.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stopped.notify(usize::MAX);
    }

    /// Clears the failure of a stopped processor so it tries again.
    pub fn restart(&self, name: &str) -> Result<(), WaitError> {
        let runner = self.runner(name)?;
        *lock(&runner.state) = RunnerState::default();
        runner.restarted.notify(usize::MAX);
        Ok(())
    }

    /// What every processor is doing.
    pub fn status(&self) -> Vec<ProcessorStatus> {
        self.inner
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

    /// Waits until each named processor has processed the log up to
    /// `position` (needs [`run`](Self::run) going). Fails if one stops on a
    /// failure first.
    pub async fn wait_for(&self, position: u64, names: &[&str]) -> Result<(), WaitError> {
        for name in names {
            let runner = self.runner(name)?;
            loop {
                let listener = runner.progressed.listen();
                if runner.position.load(Ordering::SeqCst) >= position {
                    break;
                }
                if let Some(failure) = stopped_failure(runner) {
                    return Err(WaitError::Failed(failure));
                }
                listener.await;
            }
        }
        Ok(())
    }

    /// Empties the projection `name` and builds it again from the start of
    /// the log, calling `progress` after each batch. Stop [`run`](Self::run)
    /// first or the live runner and the rebuild take turns.
    pub async fn rebuild(
        &self,
        name: &str,
        mut progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, ProcessorFailure> {
        let runner = self.runner(name).map_err(|error| ProcessorFailure {
            processor: "",
            position: 0,
            event_id: None,
            error: error.to_string(),
            attempts: 0,
        })?;
        let started = Instant::now();
        let failure = |error: ProcessorError| ProcessorFailure {
            processor: runner.processor.name(),
            position: 0,
            event_id: None,
            error: error.to_string(),
            attempts: 1,
        };
        let total = self
            .inner
            .store
            .last_position()
            .await
            .map_err(|error| failure(error.into()))?;
        let read_models = self.read_models().map_err(failure)?;
        let env = self.env(read_models);
        runner.processor.reset(&env).await.map_err(failure)?;
        runner.position.store(0, Ordering::SeqCst);
        *lock(&runner.state) = RunnerState::default();
        let mut done = 0;
        loop {
            match runner
                .processor
                .step(&env, self.inner.settings.batch_size)
                .await
            {
                Ok(Step::Advanced(position)) => {
                    done = position;
                    self.progressed(runner, position);
                    progress(RebuildProgress {
                        done,
                        total,
                        elapsed: started.elapsed(),
                    });
                }
                Ok(Step::Idle(_)) => break,
                Err(failed) => return Err(self.record(runner, failed, 1, true)),
            }
        }
        Ok(RebuildProgress {
            done,
            total,
            elapsed: started.elapsed(),
        })
    }

    fn runner(&self, name: &str) -> Result<&Runner, WaitError> {
        self.inner
            .runners
            .iter()
            .find(|runner| runner.processor.name() == name)
            .ok_or_else(|| WaitError::Unknown(name.to_owned()))
    }

    fn read_models(&self) -> Result<&ReadModels, ProcessorError> {
        // The builder only accepts processors together with read models.
        self.inner
            .read_models
            .as_ref()
            .ok_or(ProcessorError::AppDropped)
    }

    fn env<'a>(&'a self, read_models: &'a ReadModels) -> StepEnv<'a> {
        StepEnv {
            store: &*self.inner.store,
            read_models,
            app: &self.inner.app,
        }
    }

    async fn catch_up_one(&self, runner: &Runner) -> Result<(), ProcessorFailure> {
        if let Some(failure) = stopped_failure(runner) {
            return Err(failure);
        }
        let read_models = self
            .read_models()
            .map_err(|error| self.record(runner, Failed::reading(error), 1, true))?;
        let env = self.env(read_models);
        loop {
            match runner
                .processor
                .step(&env, self.inner.settings.batch_size)
                .await
            {
                Ok(Step::Advanced(position)) => self.progressed(runner, position),
                Ok(Step::Idle(position)) => {
                    self.progressed(runner, position);
                    return Ok(());
                }
                Err(failed) => return Err(self.record(runner, failed, 1, true)),
            }
        }
    }

    /// The live loop of one processor.
    async fn follow(&self, runner: &Runner) {
        let Ok(read_models) = self.read_models() else {
            return;
        };
        let env = self.env(read_models);
        let policy = self.inner.settings.retry;
        let mut attempts = 0;
        while !self.inner.stopping.load(Ordering::SeqCst) {
            if lock(&runner.state).stopped {
                let restarted = runner.restarted.listen();
                if lock(&runner.state).stopped {
                    self.until_stopped(restarted).await;
                }
                attempts = 0;
                continue;
            }
            // After a failure, one event at a time, so the good events before
            // the bad one are committed and the failure names the bad one.
            let limit = if attempts == 0 {
                self.inner.settings.batch_size
            } else {
                1
            };
            // Listen before reading, so a commit during the read still wakes us.
            let woken = self.inner.appended.listen();
            match runner.processor.step(&env, limit).await {
                Ok(Step::Advanced(position)) => {
                    attempts = 0;
                    lock(&runner.state).failure = None;
                    self.progressed(runner, position);
                }
                Ok(Step::Idle(position)) => {
                    self.progressed(runner, position);
                    let wait: Vec<BoxFuture<'_, ()>> = vec![
                        Box::pin(woken),
                        Box::pin(self.inner.store.wait_for_appends()),
                        Box::pin(futures_timer::Delay::new(self.inner.settings.poll_interval)),
                    ];
                    self.until_stopped(Race(wait)).await;
                }
                Err(failed) => {
                    attempts += 1;
                    let give_up = attempts >= policy.max_attempts;
                    let failure = self.record(runner, failed, attempts, give_up);
                    tracing::warn!(
                        processor = failure.processor,
                        position = failure.position,
                        attempts,
                        "{}",
                        failure.error
                    );
                    if !give_up {
                        let delay = policy
                            .first_delay
                            .saturating_mul(1 << (attempts - 1).min(16))
                            .min(policy.max_delay);
                        self.until_stopped(futures_timer::Delay::new(delay)).await;
                    }
                }
            }
        }
    }

    /// Waits for `wait`, or for [`stop`](Self::stop).
    async fn until_stopped(&self, wait: impl Future<Output = ()> + Send) {
        let stopped = self.inner.stopped.listen();
        if self.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        Race(vec![Box::pin(wait), Box::pin(stopped)]).await;
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
        let failure = ProcessorFailure {
            processor: runner.processor.name(),
            position: failed.position,
            event_id: failed.event_id,
            error: failed.error.to_string(),
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

impl Dispatcher {
    /// The app's event processors.
    pub fn processors(&self) -> &Processors {
        self.processors_ref()
    }
}

/// Resolves when the first of several futures does.
struct Race<'a>(Vec<BoxFuture<'a, ()>>);

impl Future for Race<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        for future in &mut self.0 {
            if future.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// Resolves when all of several futures have.
struct JoinAll<'a>(Vec<BoxFuture<'a, ()>>);

impl Future for JoinAll<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        self.0
            .retain_mut(|future| future.as_mut().poll(context).is_pending());
        if self.0.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
