//! Decisions over consistency boundaries: the events a decision's query
//! matches are read (from where this app last read them, when its state is
//! kept), the decision is made, and its events are appended on the
//! condition that nothing the query matches was recorded since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Instrument;

use super::command::new_event;
use super::decode_error;
use super::{Committed, Cqrs};
use crate::aggregate::{Decision, Event};
use crate::boundary::{AppendCondition, EventQuery};
use crate::decision_model::DecisionModel;
use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::error::CommandError;
use crate::store::StoreError;

/// One decision type's boundaries in this app: each a slot that its
/// decisions take in turn (so decisions of one app on one boundary do not
/// race each other), holding the state it was decided on last and the log
/// position it was read up to (so the next one reads only what came after).
pub(super) struct DecisionStates<D> {
    slots: Mutex<HashMap<String, Arc<Boundary<D>>>>,
    capacity: usize,
}

/// A boundary's slot: its kept state and the position read, if any.
type Boundary<D> = async_lock::Mutex<Option<(D, u64)>>;

impl<D> DecisionStates<D> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The boundary's slot. Kept while they fit; a full set starts over
    /// rather than tracking use (a decision holding a dropped slot finishes
    /// on it, its condition still checked by the store). With no capacity
    /// nothing is kept and decisions do not take turns.
    fn slot(&self, stream: &str) -> Arc<Boundary<D>> {
        if self.capacity == 0 {
            return Arc::new(async_lock::Mutex::new(None));
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(stream) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.capacity {
            slots.clear();
        }
        let slot = Arc::new(async_lock::Mutex::new(None));
        slots.insert(stream.to_owned(), Arc::clone(&slot));
        slot
    }
}

impl Cqrs {
    /// Decides `command` on the boundary `model` names (its `#[tag]` fields
    /// set, the rest as the decision starts): reads the events its query
    /// matches, applies them, decides, and appends the events it decided
    /// to its stream (`D::NAME`, the tags joined by `/`) on the condition
    /// that nothing the query matches was recorded after what it read.
    /// When something was (another decision on an overlapping boundary, or
    /// an aggregate's event the query matches), it reads what came since
    /// and decides again, up to the app's retries; decisions on disjoint
    /// boundaries never conflict.
    ///
    /// The recorded events are ordinary events of the log: projections,
    /// process managers, gateways and inline handlers see them as any
    /// other. `aggregate_id` of the answer is the decision's stream and
    /// `version` that stream's version after the append (0 when nothing was
    /// recorded). A [`command_id`](Metadata::command_id) in `decide_with`'s
    /// metadata makes the decision idempotent, as for aggregates.
    ///
    /// The app keeps the state of each boundary it decided on (up to its
    /// cache capacity), so a hot boundary reads only the events recorded
    /// since its last decision, and its decisions on one boundary run one
    /// at a time, as its commands to one aggregate do: they retry only for
    /// other processes' writes.
    pub async fn decide<D: DecisionModel>(
        &self,
        model: D,
        command: D::Command,
    ) -> Result<Committed<D::Event>, CommandError<D::Error>> {
        self.decide_with(model, command, Metadata::default()).await
    }

    /// [`decide`](Self::decide) with metadata to record on every event.
    pub async fn decide_with<D: DecisionModel>(
        &self,
        model: D,
        command: D::Command,
        mut metadata: Metadata,
    ) -> Result<Committed<D::Event>, CommandError<D::Error>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(crate::id::new_id());
        }
        let stream = model.stream_id()?;
        let span = if crate::telemetry::spans_at(tracing::Level::INFO) {
            tracing::info_span!(
                "decide",
                decision = D::NAME,
                boundary = stream.as_str(),
                retries = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        if !span.is_disabled() {
            crate::telemetry::record(&span, &mut metadata);
        }
        self.decide_on(model, &stream, command, &metadata)
            .instrument(span)
            .await
    }

    async fn decide_on<D: DecisionModel>(
        &self,
        model: D,
        stream: &str,
        command: D::Command,
        metadata: &Metadata,
    ) -> Result<Committed<D::Event>, CommandError<D::Error>> {
        let query = model.query()?;
        if let Some(first) = self.decided_before::<D>(stream, metadata).await? {
            return Ok(first);
        }
        let slot = self.decision_states::<D>().slot(stream);
        let mut kept = slot.lock().await;
        let mut retries = 0;
        loop {
            let (mut state, head) = self.read_state(&model, &mut kept, &query).await?;
            let Decision { events, deadlines } = state
                .decide(command.clone())
                .map_err(CommandError::Domain)?;
            if !deadlines.is_empty() {
                return Err(CommandError::Store(StoreError::Unsupported {
                    what: "deadlines of a decision over a boundary",
                }));
            }
            let new_events = events
                .iter()
                .map(|event| new_event(event, metadata))
                .collect::<Result<Vec<_>, _>>()?;
            if events.is_empty() {
                return Ok(Committed::nothing(stream, 0, retries, false));
            }
            let condition = AppendCondition {
                query: query.clone(),
                after: head,
            };
            let matched: Vec<bool> = new_events
                .iter()
                .map(|event| query.matches(event.event_name, &event.tags))
                .collect();
            match self
                .inner
                .store
                .append_if(D::NAME, stream, new_events, condition)
                .await
            {
                Ok(appended) => {
                    // Nothing the query matches came between the read and
                    // this batch: the state with its own events is exact.
                    // (One that would not read back is not kept; the
                    // append stands.)
                    let applied = appended
                        .iter()
                        .zip(&matched)
                        .filter(|(_, m)| **m)
                        .try_for_each(|(envelope, _)| state.apply_recorded(envelope));
                    if let (Ok(()), Some(last)) = (applied, appended.last()) {
                        *kept = Some((state, last.position));
                    }
                    tracing::Span::current().record("retries", retries);
                    return Ok(self.decided(stream, appended, events, retries).await);
                }
                Err(changed @ StoreError::BoundaryChanged { .. }) => {
                    if retries == self.inner.max_retries {
                        return Err(CommandError::BoundaryChanged {
                            decision: D::NAME,
                            changed,
                            attempts: retries + 1,
                        });
                    }
                    retries += 1;
                }
                // The same command id was decided meanwhile: its events
                // are the answer.
                Err(duplicate @ StoreError::DuplicateCommand { .. }) => {
                    return match self.decided_before::<D>(stream, metadata).await? {
                        Some(first) => Ok(Committed { retries, ..first }),
                        None => Err(CommandError::Store(duplicate)),
                    };
                }
                Err(error) => return Err(CommandError::Store(error)),
            }
        }
    }

    /// A command id decided before is answered with what it recorded, not
    /// decided again on a state its own events changed.
    async fn decided_before<D: DecisionModel>(
        &self,
        stream: &str,
        metadata: &Metadata,
    ) -> Result<Option<Committed<D::Event>>, CommandError<D::Error>> {
        let Some(command_id) = metadata.command_id else {
            return Ok(None);
        };
        let recorded = self
            .inner
            .store
            .load_command(D::NAME, stream, command_id)
            .await
            .map_err(CommandError::Store)?;
        if recorded.is_empty() {
            return Ok(None);
        }
        first_run::<D>(stream, recorded).map(Some)
    }

    /// The boundary's state, from what its slot kept and the events the
    /// query selects since, and the log's head it was read up to (kept).
    async fn read_state<D: DecisionModel>(
        &self,
        model: &D,
        kept: &mut Option<(D, u64)>,
        query: &EventQuery,
    ) -> Result<(D, u64), CommandError<D::Error>> {
        let (mut state, after) = kept.clone().unwrap_or_else(|| (model.clone(), 0));
        let read = self
            .inner
            .store
            .read_matching(query.clone(), after)
            .await
            .map_err(CommandError::Store)?;
        for envelope in &read.events {
            apply(&mut state, envelope)?;
        }
        *kept = Some((state.clone(), read.head));
        Ok((state, read.head))
    }

    /// After a decision's append: wakes the processors and delivers the
    /// events to the inline handlers.
    async fn decided<E: Event>(
        &self,
        stream: &str,
        appended: Vec<Envelope>,
        events: Vec<E>,
        retries: u32,
    ) -> Committed<E> {
        let version = appended.last().map_or(0, |envelope| envelope.sequence);
        let envelopes: Vec<Envelope<E>> = appended
            .into_iter()
            .zip(events)
            .map(|(envelope, event)| envelope.with_payload(event))
            .collect();
        self.inner.appended.notify(usize::MAX);
        let handler_failures = self.inner.handlers.deliver(&envelopes).await;
        Committed {
            aggregate_id: stream.to_owned(),
            version,
            events: envelopes,
            retries,
            handler_failures,
            duplicate: false,
        }
    }

    fn decision_states<D: DecisionModel>(&self) -> Arc<DecisionStates<D>> {
        self.runtime_of(|| DecisionStates::<D>::new(self.inner.cache_capacity))
    }
}

/// Applies one matched event to the state, or says which event would not
/// read.
fn apply<D: DecisionModel>(
    state: &mut D,
    envelope: &Envelope,
) -> Result<(), CommandError<D::Error>> {
    state
        .apply_recorded(envelope)
        .map_err(|source| CommandError::Decode(decode_error(envelope, source)))
}

/// The answer of a decision whose command id its stream already holds:
/// the events of that first run.
fn first_run<D: DecisionModel>(
    stream: &str,
    recorded: Vec<Envelope<JsonPayload>>,
) -> Result<Committed<D::Event>, CommandError<D::Error>> {
    let version = recorded.last().map_or(0, |envelope| envelope.sequence);
    let events = recorded
        .into_iter()
        .map(|envelope| {
            match D::Event::decode(
                &envelope.event_name,
                envelope.event_version,
                &envelope.payload,
            ) {
                Ok(event) => Ok(envelope.with_payload(event)),
                Err(source) => Err(CommandError::Decode(decode_error(&envelope, source))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Committed {
        aggregate_id: stream.to_owned(),
        version,
        events,
        retries: 0,
        handler_failures: Vec::new(),
        duplicate: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boundary_has_one_slot_until_the_set_is_full() {
        let states = DecisionStates::<u32>::new(2);
        let first = states.slot("a");
        assert!(
            Arc::ptr_eq(&first, &states.slot("a")),
            "decisions on a take turns"
        );
        states.slot("b");
        let again = states.slot("c");
        assert!(
            !Arc::ptr_eq(&first, &states.slot("a")),
            "a full set starts over"
        );
        assert!(Arc::ptr_eq(&again, &states.slot("c")));
        let none = DecisionStates::<u32>::new(0);
        assert!(
            !Arc::ptr_eq(&none.slot("a"), &none.slot("a")),
            "no capacity, no turns"
        );
    }
}
