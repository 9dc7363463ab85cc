//! [`ProjectionRunner`]: a `#[projection]` as a processor, its batch of views and checkpoint committed in one transaction.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Failed, Processor, ProcessorError, ProcessorKind, Step, StepEnv};
use crate::future::BoxFuture;
use crate::store::ReadLimit;
use crate::view::{Projection, ViewCache};

/// Runs projection `P`: reads a batch, applies it to the cached views,
/// writes the changed ones and the checkpoint in one transaction.
pub(crate) struct ProjectionRunner<P: Projection> {
    cache: async_lock::Mutex<ViewCache<P>>,
    /// The checkpoint this runner last committed: if the store holds another
    /// one, another runner wrote in between and the cache is stale.
    committed: AtomicU64,
    _projection: PhantomData<fn() -> P>,
}

impl<P: Projection> ProjectionRunner<P> {
    pub(crate) fn new() -> Self {
        Self {
            cache: async_lock::Mutex::new(ViewCache::default()),
            committed: AtomicU64::new(u64::MAX),
            _projection: PhantomData,
        }
    }

    async fn run_step(&self, env: &StepEnv<'_>, limit: ReadLimit) -> Result<Step, Failed> {
        let views = env.views.backend();
        // The batch is read before the transaction starts: a backend whose
        // transaction holds a write lock (SQLite) must not wait for anything
        // else while holding it.
        let checkpoint = views
            .checkpoint(P::NAME)
            .await
            .map_err(Failed::checkpoint)?;
        let batch = env
            .store
            .read_all(checkpoint + 1, limit)
            .await
            .map_err(|error| Failed::after(checkpoint, error))?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        let failed = |error| Failed::after(checkpoint, error);
        let mut transaction = views.begin(P::NAME).await.map_err(failed)?;
        let locked = transaction.checkpoint().await.map_err(failed)?;
        let mut cache = self.cache.lock().await;
        if locked != checkpoint {
            // Another runner committed in between: start over from its checkpoint.
            cache.invalidate();
            self.committed.store(u64::MAX, Ordering::SeqCst);
            return Ok(Step::Advanced(locked));
        }
        // Until this batch commits the cache is trusted by nobody: a step
        // dropped half-way (its `run` future dropped) leaves changes in it
        // that were never written.
        if self.committed.swap(u64::MAX, Ordering::SeqCst) != checkpoint {
            cache.invalidate();
        }
        for envelope in &batch {
            if !P::handles(&envelope.event_name) {
                continue;
            }
            let mut views = cache.views(&mut *transaction);
            if let Err(error) = P::apply(envelope, &mut views).await {
                cache.discard_changes();
                self.committed.store(checkpoint, Ordering::SeqCst);
                return Err(Failed::at(envelope, ProcessorError::Handler(error)));
            }
        }
        let written = async {
            let changes = cache.take_changes()?;
            transaction.write(changes).await?;
            transaction.commit(last).await
        };
        if let Err(error) = written.await {
            // Some views may be marked written that were not.
            cache.invalidate();
            self.committed.store(u64::MAX, Ordering::SeqCst);
            return Err(failed(error));
        }
        self.committed.store(last, Ordering::SeqCst);
        Ok(Step::Advanced(last))
    }

    async fn run_reset(&self, env: &StepEnv<'_>) -> Result<(), ProcessorError> {
        let mut cache = self.cache.lock().await;
        let mut transaction = env.views.backend().begin(P::NAME).await?;
        transaction.clear().await?;
        transaction.commit(0).await?;
        cache.reset();
        self.committed.store(0, Ordering::SeqCst);
        Ok(())
    }
}

impl<P: Projection> Processor for ProjectionRunner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Projection
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, limit))
    }

    fn reset<'a>(&'a self, env: &'a StepEnv<'a>) -> BoxFuture<'a, Result<(), ProcessorError>> {
        Box::pin(self.run_reset(env))
    }
}
