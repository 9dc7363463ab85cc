//! [`DynEventStore`]: an [`EventStore`] behind a pointer, so the app holds
//! any store without naming its type.

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DueQuery, EventStore,
    ReadLimit, Snapshot, StoreError, StoredDeadline, StreamAppend,
};
use crate::boundary::{AppendCondition, EventQuery};
use crate::envelope::{Envelope, NewEvent};
use crate::future::BoxFuture;
use crate::store::Matching;
use crate::view::ViewStore;

/// [`EventStore`] with boxed futures, so the runtime can hold any store
/// without naming its type.
pub(crate) trait DynEventStore: Send + Sync {
    fn append<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> BoxFuture<'_, Vec<Result<Vec<Envelope>, StoreError>>>;

    /// One command's batch with its deadline changes: `append_streams` of
    /// one, traced as an append.
    fn append_decision(
        &self,
        append: StreamAppend,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>>;

    fn load<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        from_sequence: u64,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn read_matching(
        &self,
        query: EventQuery,
        after: u64,
    ) -> BoxFuture<'_, Result<Matching, StoreError>>;

    fn append_if<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn read_all(
        &self,
        from_position: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>>;

    fn load_command<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        command_id: Uuid,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>>;

    fn last_position(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    fn wait_for_appends(&self) -> BoxFuture<'_, ()>;

    fn load_snapshot<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;

    fn due_deadlines(
        &self,
        query: DueQuery,
    ) -> BoxFuture<'_, Result<Vec<StoredDeadline>, StoreError>>;

    fn load_deadlines<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadline>, StoreError>>;

    fn retry_deadline<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        deadline_id: Uuid,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn deadline_failed(&self, failure: DeadlineFailure) -> BoxFuture<'_, Result<(), StoreError>>;

    fn change_deadlines(&self, changes: DeadlineChanges) -> BoxFuture<'_, Result<(), StoreError>>;

    fn deadlines(
        &self,
        filter: DeadlineFilter,
    ) -> BoxFuture<'_, Result<Vec<StoredDeadline>, StoreError>>;

    fn deadline_counts(
        &self,
        now: DateTime<Utc>,
        owner_types: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<DeadlineCounts, StoreError>>;

    fn claim_deadline<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn views(&self) -> ViewStore;

    fn backend(&self) -> &'static str;
}

impl<S: EventStore> DynEventStore for S {
    fn append<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        let events_count = events.len();
        let append =
            EventStore::append(self, aggregate_type, aggregate_id, expected_version, events);
        if !debug_spans_wanted() {
            return Box::pin(append);
        }
        let span = tracing::debug_span!(
            "store.append",
            backend = EventStore::backend(self),
            aggregate_type,
            aggregate_id,
            expected_version,
            events = events_count,
        );
        Box::pin(append.instrument(span))
    }

    fn read_matching(
        &self,
        query: EventQuery,
        after: u64,
    ) -> BoxFuture<'_, Result<Matching, StoreError>> {
        let span = tracing::debug_span!(
            "store.read_matching",
            backend = EventStore::backend(self),
            items = query.items().len(),
            after,
        );
        Box::pin(EventStore::read_matching(self, query, after).instrument(span))
    }

    fn append_if<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        let span = tracing::debug_span!(
            "store.append",
            backend = EventStore::backend(self),
            aggregate_type,
            aggregate_id,
            after = condition.after,
            events = events.len(),
        );
        Box::pin(
            EventStore::append_if(self, aggregate_type, aggregate_id, events, condition)
                .instrument(span),
        )
    }

    fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> BoxFuture<'_, Vec<Result<Vec<Envelope>, StoreError>>> {
        let span = tracing::debug_span!(
            "store.append_streams",
            backend = EventStore::backend(self),
            batches = appends.len(),
        );
        Box::pin(EventStore::append_streams(self, appends).instrument(span))
    }

    fn append_decision(
        &self,
        append: StreamAppend,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>> {
        let span = debug_spans_wanted().then(|| {
            tracing::debug_span!(
                "store.append",
                backend = EventStore::backend(self),
                aggregate_type = append.aggregate_type.as_str(),
                aggregate_id = append.aggregate_id.as_str(),
                expected_version = append.expected_version,
                events = append.events.len(),
                deadlines = append.deadlines.len(),
            )
        });
        let appending = async move {
            EventStore::append_streams(self, vec![append])
                .await
                .pop()
                .unwrap_or(Err(StoreError::Unsupported { what: "deadlines" }))
        };
        match span {
            Some(span) => Box::pin(appending.instrument(span)),
            None => Box::pin(appending),
        }
    }

    fn load<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        from_sequence: u64,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        if !debug_spans_wanted() {
            return Box::pin(EventStore::load(
                self,
                aggregate_type,
                aggregate_id,
                from_sequence,
            ));
        }
        let span = tracing::debug_span!(
            "store.load",
            backend = EventStore::backend(self),
            aggregate_type,
            aggregate_id,
            from_sequence,
            events = tracing::field::Empty,
        );
        let loading = async move {
            let loaded = EventStore::load(self, aggregate_type, aggregate_id, from_sequence).await;
            if let Ok(events) = &loaded {
                tracing::Span::current().record("events", events.len());
            }
            loaded
        };
        Box::pin(loading.instrument(span))
    }

    fn read_all(
        &self,
        from_position: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'_, Result<Vec<Envelope>, StoreError>> {
        Box::pin(EventStore::read_all(self, from_position, limit))
    }

    fn load_command<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        command_id: Uuid,
    ) -> BoxFuture<'a, Result<Vec<Envelope>, StoreError>> {
        Box::pin(EventStore::load_command(
            self,
            aggregate_type,
            aggregate_id,
            command_id,
        ))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(EventStore::last_position(self))
    }

    fn wait_for_appends(&self) -> BoxFuture<'_, ()> {
        Box::pin(EventStore::wait_for_appends(self))
    }

    fn load_snapshot<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(EventStore::load_snapshot(
            self,
            aggregate_type,
            aggregate_id,
        ))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(EventStore::save_snapshot(self, snapshot))
    }

    fn due_deadlines(
        &self,
        query: DueQuery,
    ) -> BoxFuture<'_, Result<Vec<StoredDeadline>, StoreError>> {
        Box::pin(EventStore::due_deadlines(self, query))
    }

    fn load_deadlines<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadline>, StoreError>> {
        Box::pin(EventStore::load_deadlines(
            self,
            aggregate_type,
            aggregate_id,
        ))
    }

    fn retry_deadline<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        deadline_id: Uuid,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(EventStore::retry_deadline(
            self,
            aggregate_type,
            aggregate_id,
            deadline_id,
            at,
        ))
    }

    fn deadline_failed(&self, failure: DeadlineFailure) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(EventStore::deadline_failed(self, failure))
    }

    fn change_deadlines(&self, changes: DeadlineChanges) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(EventStore::change_deadlines(self, changes))
    }

    fn deadlines(
        &self,
        filter: DeadlineFilter,
    ) -> BoxFuture<'_, Result<Vec<StoredDeadline>, StoreError>> {
        Box::pin(EventStore::deadlines(self, filter))
    }

    fn deadline_counts(
        &self,
        now: DateTime<Utc>,
        owner_types: Option<Vec<String>>,
    ) -> BoxFuture<'_, Result<DeadlineCounts, StoreError>> {
        Box::pin(EventStore::deadline_counts(self, now, owner_types))
    }

    fn claim_deadline<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(EventStore::claim_deadline(
            self,
            aggregate_type,
            aggregate_id,
            deadline_id,
            now,
            until,
        ))
    }

    fn views(&self) -> ViewStore {
        EventStore::views(self)
    }

    fn backend(&self) -> &'static str {
        EventStore::backend(self)
    }
}

/// Whether any subscriber may keep a span at DEBUG: one atomic load, so an
/// append or a load builds no span (nor pays for tracing's `log` fallback,
/// which sqlx turns on) when none would be kept. The store sits below the
/// telemetry module, so this is not its `spans_at`.
fn debug_spans_wanted() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}
