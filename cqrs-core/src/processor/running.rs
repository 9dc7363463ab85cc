//! [`Running`]: the processors following the log, as a future to spawn, and
//! [`Shutdown`], which ends them gracefully.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::future::BoxFuture;
use crate::future::Race;

/// The processors of an app following the log, from
/// [`Processors::run`](super::Processors::run): spawn it on your runtime and
/// await it (or its task) for how the run ended.
///
/// # Examples
///
/// ```
/// # use cqrs_core::{Cqrs, MemoryStore};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let app = Cqrs::new(MemoryStore::new())?;
/// let running = app.processors().run();
/// let shutdown = running.shutdown();
/// let task = tokio::spawn(running);
/// // ... the app serves commands ...
/// shutdown.now().await;        // finish the batches in progress, then stop
/// task.await??;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[must_use = "the processors run only while this future is polled: spawn it"]
pub struct Running {
    run: Arc<Run>,
    future: BoxFuture<'static, Result<(), RunError>>,
}

impl Running {
    pub(crate) fn new(
        run: Arc<Run>,
        future: impl Future<Output = Result<(), RunError>> + Send + 'static,
    ) -> Self {
        Self {
            run,
            future: Box::pin(future),
        }
    }

    /// A handle that asks this run to stop; keep it before spawning. A stop
    /// asked for before the run is first polled holds: the run then returns
    /// at once.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            run: Arc::clone(&self.run),
        }
    }
}

impl Future for Running {
    type Output = Result<(), RunError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let output = self.future.as_mut().poll(context);
        if output.is_ready() {
            self.run.end();
        }
        output
    }
}

impl Drop for Running {
    /// A run dropped before it finished (its task aborted, or never
    /// spawned) has ended too: nobody waits for it forever.
    fn drop(&mut self) {
        self.run.end();
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

/// Ends a [`Running`] gracefully: every processor finishes the batch in
/// progress (its views and checkpoint commit, or none of them) and stops.
#[derive(Clone)]
pub struct Shutdown {
    run: Arc<Run>,
}

impl Shutdown {
    pub(super) fn of(run: Arc<Run>) -> Self {
        Self { run }
    }

    /// Asks the run to stop, without waiting.
    pub fn request(&self) {
        self.run.request_stop();
    }

    /// Asks the run to stop and waits until it has.
    pub async fn now(&self) {
        self.request();
        self.run.until_ended().await;
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

/// The state of one run, shared by its [`Running`], its [`Shutdown`]s and its
/// loops (the processors', or a consumer's).
#[derive(Default)]
pub(crate) struct Run {
    stopping: AtomicBool,
    /// Fired when a stop is asked for.
    stop_requested: event_listener::Event,
    ended: AtomicBool,
    /// Fired when the run has returned or was dropped.
    on_end: event_listener::Event,
}

impl Run {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(super) fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_requested.notify(usize::MAX);
    }

    /// Waits for `wait`, or for a stop to be asked for.
    pub(crate) async fn until_stopped(&self, wait: impl Future<Output = ()> + Send) {
        let stopped = self.stop_requested.listen();
        if self.is_stopping() {
            return;
        }
        Race(vec![Box::pin(wait), Box::pin(stopped)]).await;
    }

    pub(super) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            self.on_end.notify(usize::MAX);
        }
    }

    async fn until_ended(&self) {
        let ended = self.on_end.listen();
        if self.has_ended() {
            return;
        }
        ended.await;
    }
}

/// Why a run of the processors did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Another run of these processors is going.
    #[error("the processors are already running")]
    AlreadyRunning,
}
