use std::collections::{BTreeMap, HashMap};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_lock::MutexGuardArc;

use super::{BoxFuture, ViewError, ViewStore, ViewTransaction};

/// Read models in process memory, for tests and short-lived programs.
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
    /// Projection, then document id, to JSON.
    documents: HashMap<String, BTreeMap<String, String>>,
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

impl ViewStore for MemoryViews {
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

    fn document<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        let document = lock(&self.state)
            .documents
            .get(projection)
            .and_then(|documents| documents.get(view_id))
            .cloned();
        Box::pin(ready(Ok(document)))
    }

    fn documents<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
        let documents = lock(&self.state)
            .documents
            .get(projection)
            .map(|documents| {
                documents
                    .iter()
                    .map(|(id, json)| (id.clone(), json.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(ready(Ok(documents)))
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
        let document = if self.clear {
            None
        } else {
            lock(&self.state)
                .documents
                .get(&self.processor)
                .and_then(|documents| documents.get(view_id))
                .cloned()
        };
        Box::pin(ready(Ok(document)))
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
        let documents = state.documents.entry(this.processor.clone()).or_default();
        if this.clear {
            documents.clear();
        }
        for (view_id, json) in this.changes {
            match json {
                Some(json) => documents.insert(view_id, json),
                None => documents.remove(&view_id),
            };
        }
        state.checkpoints.insert(this.processor, checkpoint);
        Box::pin(ready(Ok(())))
    }
}
