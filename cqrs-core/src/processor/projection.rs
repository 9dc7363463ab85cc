//! [`ProjectionRunner`]: a `#[projection]` as a processor, each segment's
//! batch of views, parked events and checkpoint committed in one
//! transaction after its handlers ran.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::Instrument;

use super::{
    Failed, ParkedEvent, Processor, ProcessorError, ProcessorKind, Settled, Step, StepEnv, Work,
    lock,
};
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::store::ReadLimit;
use crate::view::{Index, IndexRegistration, Projection, ViewCache, ViewError};

/// Runs projection `P`: per segment, reads a batch, applies its events to
/// the cached views, writes the changed ones and the checkpoint in one
/// transaction.
pub(crate) struct ProjectionRunner<P: Projection> {
    key: String,
    caches: Mutex<HashMap<u32, Arc<SegmentCache<P>>>>,
    _projection: PhantomData<fn() -> P>,
}

struct SegmentCache<P> {
    views: async_lock::Mutex<ViewCache<P>>,
    /// The checkpoint this runner last committed: if the store holds another
    /// one, another node wrote in between and the cache is stale.
    committed: AtomicU64,
}

/// The key of version `version` of projection `name`.
pub(crate) fn version_key(name: &str, version: u32) -> String {
    if version <= 1 {
        name.to_owned()
    } else {
        format!("{name}@{version}")
    }
}

/// The version a key names.
pub(crate) fn key_version(key: &str) -> u32 {
    key.rsplit_once('@')
        .and_then(|(_, version)| version.parse().ok())
        .unwrap_or(1)
}

impl<P: Projection> ProjectionRunner<P> {
    pub(crate) fn new() -> Self {
        Self {
            key: version_key(P::NAME, P::VERSION),
            caches: Mutex::new(HashMap::new()),
            _projection: PhantomData,
        }
    }

    fn cache(&self, work: &Work<'_>) -> Arc<SegmentCache<P>> {
        let shared = work.segments > 1;
        Arc::clone(
            lock(&self.caches)
                .entry(work.claim.segment)
                .or_insert_with(|| {
                    Arc::new(SegmentCache {
                        views: async_lock::Mutex::new(ViewCache::new(shared)),
                        committed: AtomicU64::new(u64::MAX),
                    })
                }),
        )
    }

    /// Applies the segment's events after its checkpoint to the cached
    /// views, then writes the changed ones, the events it parked and the
    /// checkpoint in one short transaction under the claim. The handlers run
    /// before the transaction begins, so a slow handler holds no lock.
    async fn run_step(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        limit: ReadLimit,
    ) -> Result<Step, Failed> {
        let (checkpoint, batch) = work.read(env, limit).await?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        let (mine, parked) = work.split(&batch, P::handles);
        if mine.is_empty() {
            return work.advance(env, checkpoint, last, parked).await;
        }
        let segment = self.cache(work);
        let mut cache = segment.views.lock().await;
        // The cache is trusted only at the checkpoint this runner left it
        // at, and by nobody while a batch is applied: a step dropped
        // half-way leaves changes in it that were never written.
        if segment.committed.swap(u64::MAX, Ordering::SeqCst) != checkpoint {
            cache.invalidate();
        }
        for envelope in mine {
            let mut views = cache.views(env.views.backend(), work.key);
            let handling = crate::telemetry::handling(P::NAME, envelope);
            if let Err(error) = P::apply(envelope, &mut views).instrument(handling).await {
                cache.discard_changes();
                segment.committed.store(checkpoint, Ordering::SeqCst);
                return Err(Failed::at(envelope, ProcessorError::Handler(error)));
            }
        }
        match commit(
            &mut cache,
            work,
            env,
            parked,
            None,
            Some((checkpoint, last)),
        )
        .await
        {
            Ok(true) => {
                segment.committed.store(last, Ordering::SeqCst);
                Ok(Step::Advanced(last))
            }
            // Moved meanwhile (a reset): the next step starts from there.
            Ok(false) => Ok(Step::Advanced(checkpoint)),
            Err(error) => Err(Failed::after(checkpoint, error)),
        }
    }

    /// Applies one parked event again and records it handled, in one
    /// transaction with its views, leaving the checkpoint where it is.
    async fn run_retry(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        envelope: &Envelope,
    ) -> Result<(), Failed> {
        let segment = self.cache(work);
        let mut cache = segment.views.lock().await;
        // The views of a parked event's stream may be anywhere: read afresh.
        cache.invalidate();
        segment.committed.store(u64::MAX, Ordering::SeqCst);
        let mut views = cache.views(env.views.backend(), work.key);
        if let Err(error) = P::apply(envelope, &mut views).await {
            return Err(Failed::at(envelope, ProcessorError::Handler(error)));
        }
        let settled = Some((envelope.position, Settled::Handled));
        commit(&mut cache, work, env, Vec::new(), settled, None)
            .await
            .map(drop)
            .map_err(|error| Failed::after(envelope.position, error))
    }
}

/// Writes a batch's changed views, parked events and retry outcome under
/// the claim, and moves the checkpoint `(from, to)` if it is still at
/// `from` (false if it was moved meanwhile) or, with `None`, leaves it.
/// The cache is left trusted only if the batch committed.
async fn commit<P: Projection>(
    cache: &mut ViewCache<P>,
    work: &Work<'_>,
    env: &StepEnv<'_>,
    parked: Vec<ParkedEvent>,
    settled: Option<(u64, Settled)>,
    advance: Option<(u64, u64)>,
) -> Result<bool, ViewError> {
    let written = async {
        let changes = cache.take_changes()?;
        let mut transaction = work.begin(env).await?;
        let checkpoint = match advance {
            Some((from, _)) if transaction.checkpoint() != from => return Ok(false),
            Some((_, to)) => to,
            None => transaction.checkpoint(),
        };
        transaction.write(changes).await?;
        if !parked.is_empty() {
            transaction.park(parked).await?;
        }
        if let Some((position, outcome)) = settled {
            transaction.settle(position, outcome).await?;
        }
        transaction.commit(checkpoint).await?;
        Ok(true)
    }
    .await;
    match written {
        Ok(true) => cache.committed(),
        // Views may be marked written that were not, or read at revisions
        // another segment has since moved past.
        _ => cache.invalidate(),
    }
    written
}

impl<P: Projection> Processor for ProjectionRunner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn indexes(&self) -> &'static [Index] {
        IndexRegistration::indexes_of::<P>()
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Projection
    }

    fn version(&self) -> u32 {
        P::VERSION
    }

    fn segments(&self) -> u32 {
        P::SEGMENTS
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, work, limit))
    }

    fn retry<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>> {
        Box::pin(self.run_retry(env, work, envelope))
    }

    fn cleared(&self, segments: u32) {
        let mut caches = lock(&self.caches);
        caches.clear();
        if segments == 1 {
            // One segment writes every view: all of them are in its cache.
            let mut views = ViewCache::new(false);
            views.reset();
            let cache = SegmentCache {
                views: async_lock::Mutex::new(views),
                committed: AtomicU64::new(0),
            };
            caches.insert(0, Arc::new(cache));
        }
    }
}
