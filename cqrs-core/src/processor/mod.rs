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
use crate::handler::HandlerError;
use crate::store::{DynEventStore, ReadLimit, StoreError, caused_by_outage};
use crate::view::{BoxFuture, ReadModels, ViewError};

/// Why an event processor could not process an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// A handler returned an error.
    #[error(transparent)]
    Handler(HandlerError),
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

impl ProcessorError {
    /// Whose failure this is: the database's when it was unavailable (a
    /// transient failure of the log or the read models, also inside a
    /// handler, such as a process manager's command that met an outage);
    /// otherwise the event's: its handler failed, it does not decode, or the
    /// data it needs is corrupt.
    pub fn cause(&self) -> FailureCause {
        let outage = match self {
            Self::Handler(error) => caused_by_outage(&**error),
            Self::View(error) => error.is_transient(),
            Self::Store(error) => error.is_transient(),
            Self::Decode(_) | Self::AppDropped => false,
        };
        if outage {
            FailureCause::Database
        } else {
            FailureCause::Event
        }
    }
}

/// Whose failure stopped a processor for a while, which decides how it is
/// retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The event cannot be processed as things stand (its handler failed, it
    /// does not decode, a row or document it needs is corrupt): retried by
    /// the [`RetryPolicy`], then the processor stops at the event until
    /// [`Processors::restart`].
    Event,
    /// The event store or the read models were unavailable (unreachable,
    /// restarting, read-only, busy): retried with a backoff of at most
    /// [`RetryPolicy::outage_delay`] for as long as it lasts, never counted
    /// against the policy; the processor resumes by itself.
    Database,
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
    /// The position of the event it could not process, or the first
    /// position it could not read.
    pub position: u64,
    /// That event's id, when the event was read.
    pub event_id: Option<Uuid>,
    /// What went wrong, the last time.
    pub error: String,
    /// Whose failure it is, which decides how it is retried.
    pub cause: FailureCause,
    /// How many times it was tried.
    pub attempts: u32,
}

impl fmt::Display for ProcessorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.cause {
            FailureCause::Event => "failed at",
            FailureCause::Database => "could not reach its database at",
        };
        write!(
            f,
            "processor {} {what} position {} after {} attempts: {}",
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
    /// True once it gave up on an event: it waits for [`Processors::restart`].
    pub stopped: bool,
}

/// How a failing processor is retried.
///
/// A handler's own failure ([`FailureCause::Event`]) is tried `max_attempts`
/// times with a doubling pause from `first_delay` up to `max_delay`, then
/// the processor stops. A failure of the database ([`FailureCause::Database`])
/// is tried for as long as it lasts, with a doubling pause from `first_delay`
/// up to `outage_delay`, so the processor resumes within about that long
/// after the database heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at one event, the first included, before the processor stops.
    pub max_attempts: u32,
    /// The pause after the first failure; it doubles after each next one.
    pub first_delay: Duration,
    /// The longest pause between attempts at a failing event.
    pub max_delay: Duration,
    /// The longest pause between attempts while the database is unavailable.
    pub outage_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            outage_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The pause after the `attempt`-th failure in a row, at most `longest`.
    fn delay(&self, attempt: u32, longest: Duration) -> Duration {
        self.first_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(longest)
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

    /// Processes the events after the checkpoint that `limit` admits, and commits.
    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: ReadLimit,
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

/// A step that failed at an event, or reading.
pub(crate) struct Failed {
    /// The event's position, or the first the step could not read; `None`
    /// when not even the checkpoint could be read.
    pub(crate) position: Option<u64>,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) error: ProcessorError,
}

impl Failed {
    pub(crate) fn at(envelope: &Envelope, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: Some(envelope.position),
            event_id: Some(envelope.event_id),
            error: error.into(),
        }
    }

    /// Reading or committing after `checkpoint` failed.
    pub(crate) fn after(checkpoint: u64, error: impl Into<ProcessorError>) -> Self {
        Self {
            position: Some(checkpoint + 1),
            event_id: None,
            error: error.into(),
        }
    }

    /// Reading the checkpoint failed.
    pub(crate) fn checkpoint(error: impl Into<ProcessorError>) -> Self {
        Self {
            position: None,
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
            cause: FailureCause::Event,
            attempts: 0,
        })?;
        let started = Instant::now();
        let failure = |error: ProcessorError| ProcessorFailure {
            processor: runner.processor.name(),
            position: 1,
            event_id: None,
            cause: error.cause(),
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
            match runner.processor.step(&env, self.inner.settings.batch).await {
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
                Err(failed) => return Err(self.record_once(runner, failed)),
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
            .map_err(|error| self.record_once(runner, Failed::checkpoint(error)))?;
        let env = self.env(read_models);
        loop {
            match runner.processor.step(&env, self.inner.settings.batch).await {
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
    async fn follow(&self, runner: &Runner) {
        let Ok(read_models) = self.read_models() else {
            return;
        };
        let env = self.env(read_models);
        let policy = self.inner.settings.retry;
        // Failures in a row: of the event at hand, and of the database.
        let mut attempts = 0;
        let mut outages = 0;
        while !self.inner.stopping.load(Ordering::SeqCst) {
            if lock(&runner.state).stopped {
                let restarted = runner.restarted.listen();
                if lock(&runner.state).stopped {
                    self.until_stopped(restarted).await;
                }
                attempts = 0;
                continue;
            }
            // After a handler failed, one event at a time, so the good events
            // before the bad one are committed and the failure names the bad one.
            let limit = if attempts == 0 {
                self.inner.settings.batch
            } else {
                ReadLimit::events(1)
            };
            // Listen before reading, so a commit during the read still wakes us.
            let woken = self.inner.appended.listen();
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
                                Box::pin(self.inner.store.wait_for_appends()),
                                Box::pin(futures_timer::Delay::new(
                                    self.inner.settings.poll_interval,
                                )),
                            ];
                            self.until_stopped(Race(wait)).await;
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
        let position = failed
            .position
            .unwrap_or_else(|| runner.position.load(Ordering::SeqCst) + 1);
        let failure = ProcessorFailure {
            processor: runner.processor.name(),
            position,
            event_id: failed.event_id,
            cause: failed.error.cause(),
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
