//! [`MemoryViews`]: views and segments in memory, a batch applied under one lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_lock::MutexGuardArc;
use chrono::Utc;
use uuid::Uuid;

use super::{
    Direction, Expected, Index, KeyValue, Plan, QueriedView, StoredView, ViewBackend, ViewChange,
    ViewError, ViewTransaction, check_keyed,
};
use crate::future::BoxFuture;
use crate::view::{Claim, Decision, ParkState, ParkedEvent, SegmentState, Settled, resegment_from};

/// Views in process memory, for tests and short-lived programs.
///
/// Batches are atomic and fenced like in the SQL backends: a transaction's
/// writes become visible together with its checkpoint, or not at all, and
/// only while its claim is current.
#[derive(Debug, Default)]
pub(crate) struct MemoryViews {
    state: Arc<Mutex<State>>,
    /// One lock per segment, held by its open transaction.
    locks: Mutex<HashMap<(String, u32), SegmentLock>>,
}

type SegmentLock = Arc<async_lock::Mutex<()>>;

#[derive(Debug, Default)]
struct State {
    /// Processor key, then view id.
    views: HashMap<String, BTreeMap<String, StoredView>>,
    /// Processor key, then view id, to the keys of an indexed view.
    keys: HashMap<String, BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
    segments: HashMap<String, Vec<Segment>>,
    /// Processor key, then node, to the end of its heartbeat.
    nodes: HashMap<String, HashMap<String, Instant>>,
    parked: HashMap<String, BTreeMap<u64, ParkedEvent>>,
    /// Projection name to the key of the version queries read.
    serving: HashMap<String, String>,
    /// Consumer key to the messages its inbox holds.
    inbox: HashMap<String, HashSet<Uuid>>,
}

#[derive(Debug, Clone, Default)]
struct Segment {
    position: u64,
    owner: Option<String>,
    token: u64,
    lease_until: Option<Instant>,
}

impl Segment {
    fn is_free(&self, now: Instant) -> bool {
        self.owner.is_none() || self.lease_until.is_none_or(|until| until <= now)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Writes check everything before they start mutating, so a panic
    // elsewhere cannot leave the state half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn segment(&mut self, processor: &str, claim: Claim) -> Result<&mut Segment, ViewError> {
        self.segments
            .get_mut(processor)
            .and_then(|segments| segments.get_mut(claim.segment as usize))
            .filter(|segment| segment.token == claim.token)
            .ok_or_else(|| ViewError::fenced(processor, claim.segment))
    }

    /// The segments of `processor` as a backend reports them.
    fn segment_states(&self, processor: &str) -> Vec<SegmentState> {
        let now = Instant::now();
        let parked = self.parked.get(processor);
        let count = |index: u32, which: ParkState| {
            parked.map_or(0, |parked| {
                parked
                    .values()
                    .filter(|event| event.segment == index && event.state == which)
                    .count() as u64
            })
        };
        self.segments
            .get(processor)
            .map_or_else(Vec::new, |segments| {
                let total = u32::try_from(segments.len()).unwrap_or(u32::MAX);
                segments
                    .iter()
                    .zip(0..)
                    .map(|(segment, index)| SegmentState {
                        segment: index,
                        segments: total,
                        position: segment.position,
                        owner: segment.owner.clone(),
                        token: segment.token,
                        expired: segment.is_free(now),
                        parked: count(index, ParkState::Parked) + count(index, ParkState::Retrying),
                        retrying: count(index, ParkState::Retrying),
                    })
                    .collect()
            })
    }

    fn serving_key(&self, projection: &str) -> String {
        self.serving
            .get(projection)
            .cloned()
            .unwrap_or_else(|| projection.to_owned())
    }

    /// Marks the parked events of one stream that `select` picks as `to`.
    fn mark_stream(
        &mut self,
        processor: &str,
        stream: &(String, String),
        select: impl Fn(&ParkedEvent) -> bool,
        to: ParkState,
    ) {
        let now = Utc::now();
        for event in self
            .parked
            .entry(processor.to_owned())
            .or_default()
            .values_mut()
        {
            if &event.stream() == stream && select(event) {
                event.state = to;
                event.decided_at = Some(now);
            }
        }
    }
}

struct MemoryTransaction {
    state: Arc<Mutex<State>>,
    processor: String,
    claim: Claim,
    checkpoint: u64,
    changes: Vec<ViewChange>,
    parked: Vec<ParkedEvent>,
    settled: Vec<(u64, Settled)>,
    received: Vec<Uuid>,
    _lock: MutexGuardArc<()>,
}

impl ViewBackend for MemoryViews {
    fn prepare<'a>(
        &'a self,
        processor: &'a str,
        segments: u32,
        resegment: bool,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let mut state = lock(&self.state);
        let stored = state.segment_states(processor);
        let result = resegment_from(processor, &stored, segments, resegment).map(|start| {
            if let Some(position) = start {
                let token = stored
                    .iter()
                    .map(|segment| segment.token)
                    .max()
                    .unwrap_or(0);
                let fresh = Segment {
                    position,
                    token,
                    ..Segment::default()
                };
                state
                    .segments
                    .insert(processor.to_owned(), vec![fresh; segments.max(1) as usize]);
            }
        });
        Box::pin(ready(result))
    }

    fn segments<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SegmentState>, ViewError>> {
        let segments = lock(&self.state).segment_states(processor);
        Box::pin(ready(Ok(segments)))
    }

    fn processors(&self) -> BoxFuture<'_, Result<Vec<String>, ViewError>> {
        let mut names: Vec<String> = lock(&self.state).segments.keys().cloned().collect();
        names.sort();
        Box::pin(ready(Ok(names)))
    }

    fn heartbeat<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ViewError>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let nodes = state.nodes.entry(processor.to_owned()).or_default();
        nodes.insert(node.to_owned(), now + lease);
        nodes.retain(|_, until| *until > now);
        let mut live: Vec<String> = nodes.keys().cloned().collect();
        live.sort();
        Box::pin(ready(Ok(live)))
    }

    fn claim<'a>(
        &'a self,
        processor: &'a str,
        segment: u32,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Claim>, ViewError>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let claim = state
            .segments
            .get_mut(processor)
            .and_then(|segments| segments.get_mut(segment as usize))
            .filter(|row| row.is_free(now))
            .map(|row| {
                row.owner = Some(node.to_owned());
                row.token += 1;
                row.lease_until = Some(now + lease);
                Claim {
                    segment,
                    token: row.token,
                }
            });
        Box::pin(ready(Ok(claim)))
    }

    fn renew<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claim>, ViewError>> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let mut held = Vec::new();
        for (row, segment) in state
            .segments
            .get_mut(processor)
            .into_iter()
            .flatten()
            .zip(0..)
        {
            if row.owner.as_deref() == Some(node) {
                row.lease_until = Some(now + lease);
                held.push(Claim {
                    segment,
                    token: row.token,
                });
            }
        }
        Box::pin(ready(Ok(held)))
    }

    fn release<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        if let Ok(row) = lock(&self.state).segment(processor, claim) {
            row.owner = None;
            row.lease_until = None;
        }
        Box::pin(ready(Ok(())))
    }

    fn leave<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let mut state = lock(&self.state);
        for row in state.segments.get_mut(processor).into_iter().flatten() {
            if row.owner.as_deref() == Some(node) {
                row.owner = None;
                row.lease_until = None;
            }
        }
        if let Some(nodes) = state.nodes.get_mut(processor) {
            nodes.remove(node);
        }
        Box::pin(ready(Ok(())))
    }

    fn checkpoint<'a>(
        &'a self,
        processor: &'a str,
        segment: u32,
    ) -> BoxFuture<'a, Result<u64, ViewError>> {
        let position = lock(&self.state)
            .segments
            .get(processor)
            .and_then(|segments| segments.get(segment as usize))
            .map_or(0, |row| row.position);
        Box::pin(ready(Ok(position)))
    }

    fn load<'a>(
        &'a self,
        processor: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredView>, ViewError>> {
        let view = lock(&self.state)
            .views
            .get(processor)
            .and_then(|views| views.get(view_id))
            .cloned();
        Box::pin(ready(Ok(view)))
    }

    fn begin<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>> {
        let segment_lock = Arc::clone(
            lock(&self.locks)
                .entry((processor.to_owned(), claim.segment))
                .or_default(),
        );
        Box::pin(async move {
            let guard = segment_lock.lock_arc().await;
            let checkpoint = lock(&self.state).segment(processor, claim)?.position;
            let transaction: Box<dyn ViewTransaction + 'a> = Box::new(MemoryTransaction {
                state: Arc::clone(&self.state),
                processor: processor.to_owned(),
                claim,
                checkpoint,
                changes: Vec::new(),
                parked: Vec::new(),
                settled: Vec::new(),
                received: Vec::new(),
                _lock: guard,
            });
            Ok(transaction)
        })
    }

    fn advance<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<bool, ViewError>> {
        let mut state = lock(&self.state);
        let result = state.segment(processor, claim).map(|row| {
            let moved = row.position == from;
            if moved {
                row.position = to;
            }
            moved
        });
        Box::pin(ready(result))
    }

    fn reset<'a>(
        &'a self,
        processor: &'a str,
        position: u64,
        clear: bool,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let mut state = lock(&self.state);
        for row in state.segments.get_mut(processor).into_iter().flatten() {
            row.position = position;
        }
        if clear {
            state.views.remove(processor);
            state.keys.remove(processor);
            state.keys.remove(processor);
            state.parked.remove(processor);
        }
        Box::pin(ready(Ok(())))
    }

    fn parked<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ParkedEvent>, ViewError>> {
        let parked = lock(&self.state)
            .parked
            .get(processor)
            .map(|parked| parked.values().cloned().collect())
            .unwrap_or_default();
        Box::pin(ready(Ok(parked)))
    }

    fn decide<'a>(
        &'a self,
        processor: &'a str,
        position: u64,
        decision: Decision,
    ) -> BoxFuture<'a, Result<bool, ViewError>> {
        let mut state = lock(&self.state);
        let Some(event) = state
            .parked
            .get(processor)
            .and_then(|parked| parked.get(&position))
            .filter(|event| event.state == ParkState::Parked)
            .cloned()
        else {
            return Box::pin(ready(Ok(false)));
        };
        let stream = event.stream();
        let is_parked = |other: &ParkedEvent| other.state == ParkState::Parked;
        match decision {
            Decision::Retry => {
                state.mark_stream(processor, &stream, is_parked, ParkState::Retrying)
            }
            Decision::Skip => {
                state.mark_stream(
                    processor,
                    &stream,
                    |other| other.position == position,
                    ParkState::Skipped,
                );
                state.mark_stream(processor, &stream, is_parked, ParkState::Retrying);
            }
        }
        Box::pin(ready(Ok(true)))
    }

    fn serving<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        let serving = lock(&self.state).serving.get(projection).cloned();
        Box::pin(ready(Ok(serving)))
    }

    fn switch<'a>(
        &'a self,
        projection: &'a str,
        from: Option<&'a str>,
        to: &'a str,
    ) -> BoxFuture<'a, Result<bool, ViewError>> {
        let mut state = lock(&self.state);
        let current = state.serving.get(projection).map(String::as_str);
        let switched = current == from;
        if switched {
            state.serving.insert(projection.to_owned(), to.to_owned());
        }
        Box::pin(ready(Ok(switched)))
    }

    fn retire<'a>(&'a self, processor: &'a str) -> BoxFuture<'a, Result<(), ViewError>> {
        let mut state = lock(&self.state);
        state.views.remove(processor);
        state.keys.remove(processor);
        state.segments.remove(processor);
        state.nodes.remove(processor);
        state.parked.remove(processor);
        Box::pin(ready(Ok(())))
    }

    fn received<'a>(
        &'a self,
        consumer: &'a str,
        messages: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Uuid>, ViewError>> {
        let state = lock(&self.state);
        let held = state.inbox.get(consumer).map_or_else(Vec::new, |inbox| {
            messages
                .iter()
                .filter(|id| inbox.contains(id))
                .copied()
                .collect()
        });
        Box::pin(ready(Ok(held)))
    }

    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>> {
        let state = lock(&self.state);
        let view = state
            .views
            .get(&state.serving_key(projection))
            .and_then(|views| views.get(view_id))
            .map(|view| view.state.clone());
        Box::pin(ready(Ok(view)))
    }

    fn query<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<Vec<QueriedView>, ViewError>> {
        Box::pin(ready(Ok(self.page(plan))))
    }

    fn ensure_indexes<'a>(
        &'a self,
        key: &'a str,
        indexes: &'static [Index],
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let state = lock(&self.state);
        let views = state.views.get(key);
        let keys = state.keys.get(key);
        // The first view's keys, as the SQL backends read them.
        let sample = views.and_then(|views| views.keys().next()).map(|view_id| {
            keys.and_then(|keys| keys.get(view_id))
                .map(|keys| serde_json::Value::Object(keys.clone()).to_string())
        });
        Box::pin(ready(check_keyed(key, indexes, sample)))
    }

    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>> {
        let state = lock(&self.state);
        let views = state
            .views
            .get(&state.serving_key(projection))
            .map(|views| {
                views
                    .iter()
                    .map(|(id, view)| (id.clone(), view.state.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(ready(Ok(views)))
    }
}

impl MemoryViews {
    /// A query's page: the serving version's indexed views that the plan
    /// admits, sorted by (ordered value, view id) in its direction.
    fn page(&self, plan: &Plan) -> Vec<QueriedView> {
        let state = lock(&self.state);
        let key = state.serving_key(plan.projection);
        let (Some(views), Some(keys)) = (state.views.get(&key), state.keys.get(&key)) else {
            return Vec::new();
        };
        let mut found: Vec<(Option<KeyValue>, &String)> = keys
            .iter()
            .filter(|(view_id, keys)| plan.admits(keys, view_id))
            .map(|(view_id, keys)| (plan.key_of(keys), view_id))
            .collect();
        found.sort_by(|(a, a_id), (b, b_id)| (a, a_id.as_bytes()).cmp(&(b, b_id.as_bytes())));
        if plan.direction == Direction::Descending {
            found.reverse();
        }
        found
            .into_iter()
            .take(plan.limit)
            .filter_map(|(_, view_id)| {
                let view = views.get(view_id)?;
                Some((view_id.clone(), view.state.clone()))
            })
            .collect()
    }
}

impl ViewTransaction for MemoryTransaction {
    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn write(&mut self, changes: Vec<ViewChange>) -> BoxFuture<'_, Result<(), ViewError>> {
        self.changes.extend(changes);
        Box::pin(ready(Ok(())))
    }

    fn park(&mut self, events: Vec<ParkedEvent>) -> BoxFuture<'_, Result<(), ViewError>> {
        self.parked.extend(events);
        Box::pin(ready(Ok(())))
    }

    fn settle(&mut self, position: u64, outcome: Settled) -> BoxFuture<'_, Result<(), ViewError>> {
        self.settled.push((position, outcome));
        Box::pin(ready(Ok(())))
    }

    fn receive(&mut self, messages: Vec<Uuid>) -> BoxFuture<'_, Result<(), ViewError>> {
        self.received.extend(messages);
        Box::pin(ready(Ok(())))
    }

    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>> {
        let this = *self;
        let mut state = lock(&this.state);
        Box::pin(ready(this.apply(&mut state, checkpoint)))
    }
}

impl MemoryTransaction {
    /// Checks the claim and every revision, then applies the batch.
    fn apply(&self, state: &mut State, checkpoint: u64) -> Result<(), ViewError> {
        state.segment(&self.processor, self.claim)?;
        let views = state.views.entry(self.processor.clone()).or_default();
        for change in &self.changes {
            let stored = views.get(&change.view_id).map(|view| view.revision);
            let current = match (change.revision, stored) {
                (Expected::Any, _) | (Expected::Absent, None) => true,
                (Expected::Revision(expected), Some(stored)) => expected == stored,
                _ => false,
            };
            if !current {
                return Err(ViewError::Conflict {
                    projection: self.processor.clone(),
                    view_id: change.view_id.clone(),
                });
            }
        }
        let keys = state.keys.entry(self.processor.clone()).or_default();
        for change in &self.changes {
            match &change.state {
                Some(json) => {
                    let revision = views.get(&change.view_id).map_or(0, |view| view.revision) + 1;
                    views.insert(
                        change.view_id.clone(),
                        StoredView {
                            state: json.clone(),
                            revision,
                        },
                    );
                }
                None => {
                    views.remove(&change.view_id);
                }
            }
            let indexed = change
                .keys
                .as_deref()
                .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
                .and_then(|json| match json {
                    serde_json::Value::Object(object) => Some(object),
                    _ => None,
                });
            match indexed {
                Some(object) if change.state.is_some() => {
                    keys.insert(change.view_id.clone(), object);
                }
                _ => {
                    keys.remove(&change.view_id);
                }
            }
        }
        let parked = state.parked.entry(self.processor.clone()).or_default();
        for event in &self.parked {
            parked.insert(event.position, event.clone());
        }
        for (position, outcome) in &self.settled {
            if let Some(event) = parked.get_mut(position) {
                settle(event, outcome);
            }
        }
        state
            .inbox
            .entry(self.processor.clone())
            .or_default()
            .extend(&self.received);
        state.segment(&self.processor, self.claim)?.position = checkpoint;
        Ok(())
    }
}

/// What a retry's outcome makes of a parked event.
pub(crate) fn settle(event: &mut ParkedEvent, outcome: &Settled) {
    match outcome {
        Settled::Handled => {
            event.state = ParkState::Retried;
            event.attempts += 1;
        }
        Settled::Failed(error) => {
            event.state = ParkState::Parked;
            event.error = Some(error.clone());
            event.attempts += 1;
        }
        Settled::Waiting => event.state = ParkState::Parked,
    }
}
