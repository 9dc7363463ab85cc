//! [`MemoryViews`]: views and checkpoints in memory, a batch applied under one lock.

use std::collections::{BTreeMap, HashMap};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_lock::MutexGuardArc;

use super::{ViewBackend, ViewError, ViewTransaction};
use crate::future::BoxFuture;

/// Views in process memory, for tests and short-lived programs.
///
/// Batches are atomic like in the SQL backends: a transaction's writes become
/// visible together with its checkpoint, or not at all.
#[derive(Debug, Default)]
pub struct MemoryViews {
    state: Arc<Mutex<State>>,
    /// One lock per processor, held by its open transaction.
    locks: Mutex<HashMap<String, Arc<async_lock::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Projection, then view id, to JSON.
    views: HashMap<String, BTreeMap<String, String>>,
    checkpoints: HashMap<String, u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Writes check nothing after they start mutating, so a panic elsewhere
    // cannot leave the state half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct MemoryTransaction {
    state: Arc<Mutex<State>>,
    processor: String,
    changes: Vec<(String, Option<String>)>,
    clear: bool,
    _lock: MutexGuardArc<()>,
}

impl ViewBackend for MemoryViews {
    fn begin<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>> {
        let processor_lock = Arc::clone(lock(&self.locks).entry(processor.to_owned()).or_default());
        Box::pin(async move {
            let guard = processor_lock.lock_arc().await;
            let transaction: Box<dyn ViewTransaction + 'a> = Box::new(MemoryTransaction {
                state: Arc::clone(&self.state),
                processor: processor.to_owned(),
                changes: Vec::new(),
                clear: false,
                _lock: guard,
            });
            Ok(transaction)
        })
    }

    fn checkpoint<'a>(&'a self, processor: &'a str) -> BoxFuture<'a, Result<u64, ViewError>> {
        let position = lock(&self.state)
            .checkpoints
            .get(processor)
            .copied()
            .unwrap_or(0);
        Box::pin(ready(Ok(position)))
    }

    fn advance<'a>(
        &'a self,
        processor: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<bool, ViewError>> {
        let mut state = lock(&self.state);
        let checkpoint = state.checkpoints.entry(processor.to_owned()).or_insert(0);
        let moved = *checkpoint == from;
        if moved {
            *checkpoint = to;
        }
        Box::pin(ready(Ok(moved)))
    }

    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        let view = lock(&self.state)
            .views
            .get(projection)
            .and_then(|views| views.get(view_id))
            .cloned();
        Box::pin(ready(Ok(view)))
    }

    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
        let views = lock(&self.state)
            .views
            .get(projection)
            .map(|views| {
                views
                    .iter()
                    .map(|(id, json)| (id.clone(), json.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(ready(Ok(views)))
    }
}

impl ViewTransaction for MemoryTransaction {
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<u64, ViewError>> {
        let position = lock(&self.state)
            .checkpoints
            .get(&self.processor)
            .copied()
            .unwrap_or(0);
        Box::pin(ready(Ok(position)))
    }

    fn load<'a>(
        &'a mut self,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        let view = if self.clear {
            None
        } else {
            lock(&self.state)
                .views
                .get(&self.processor)
                .and_then(|views| views.get(view_id))
                .cloned()
        };
        Box::pin(ready(Ok(view)))
    }

    fn write(
        &mut self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'_, Result<(), ViewError>> {
        self.changes.extend(changes);
        Box::pin(ready(Ok(())))
    }

    fn clear(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        self.clear = true;
        self.changes.clear();
        Box::pin(ready(Ok(())))
    }

    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>> {
        let this = *self;
        let mut state = lock(&this.state);
        let views = state.views.entry(this.processor.clone()).or_default();
        if this.clear {
            views.clear();
        }
        for (view_id, json) in this.changes {
            match json {
                Some(json) => views.insert(view_id, json),
                None => views.remove(&view_id),
            };
        }
        state.checkpoints.insert(this.processor, checkpoint);
        Box::pin(ready(Ok(())))
    }
}
