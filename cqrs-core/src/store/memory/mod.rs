//! [`MemoryStore`]: the event log in memory, for tests and examples; the conformance suite's reference.

mod deadlines;

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use foldhash::HashMap;
use uuid::Uuid;

use super::deadline::check_writes;
use super::{
    Conflict, DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DueQuery,
    EventStore, ReadLimit, Snapshot, StoreError, StoredDeadline, StreamAppend, check_batch,
    command_id, now, weight,
};
use crate::boundary::{AppendCondition, EventQuery, Tag};
use crate::envelope::{Envelope, JsonPayload, Metadata, NewEvent};
use crate::store::Matching;
use deadlines::PendingDeadlines;

/// An event store in process memory, for tests and short-lived programs.
///
/// It keeps every promise the durable stores keep (atomic batches, conflicts on
/// a stale expected version, one global order) and loses everything on exit.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventStore, MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert!(store.read_all(1, 100).await.unwrap().is_empty());
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    /// Index `i` holds position `i + 1`.
    events: Chunks,
    streams: Vec<Stream>,
    /// Aggregate type, then aggregate id, to the index in `streams`.
    stream_index: HashMap<String, HashMap<String, usize>>,
    /// Every event id, once an id arrived out of order; until then the ids
    /// in `events` are increasing and the last one is enough to tell a new
    /// id from a used one (this process's ids always increase).
    event_ids: Option<HashSet<Uuid, foldhash::fast::RandomState>>,
    /// Aggregate type and id to the newest snapshot.
    snapshots: HashMap<(String, String), Snapshot>,
    deadlines: PendingDeadlines,
    /// Each tag to the log indexes of the events carrying it, ascending.
    tagged: HashMap<Tag, Vec<usize>>,
}

/// The log's events in fixed-size chunks: appending never moves the events
/// already stored, as one growing `Vec` would (megabytes at a time).
#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Vec<Stored>>,
    len: usize,
}

const CHUNK: usize = 4_096;

impl Chunks {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> &Stored {
        &self.chunks[index / CHUNK][index % CHUNK]
    }

    fn last(&self) -> Option<&Stored> {
        self.len.checked_sub(1).map(|index| self.get(index))
    }

    fn push(&mut self, stored: Stored) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(stored);
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.chunks.iter().flatten()
    }

    /// Whether an event has this id, when the ids are in increasing order.
    fn contains_sorted(&self, id: Uuid) -> bool {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle).event_id.cmp(&id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// One event as the log keeps it: the stream by index, so appending copies
/// no strings; envelopes are built when events are read.
#[derive(Debug)]
struct Stored {
    event_id: Uuid,
    stream: usize,
    sequence: u64,
    event_name: Cow<'static, str>,
    event_version: u32,
    recorded_at: DateTime<Utc>,
    metadata: Metadata,
    payload: JsonPayload,
    tags: Box<[Tag]>,
}

#[derive(Debug)]
struct Stream {
    aggregate_type: String,
    aggregate_id: String,
    /// Indexes of the stream's events in the log.
    events: Vec<usize>,
    /// Command ids of the batches appended to it, to the log indexes of
    /// the batch's first event and its length.
    commands: HashMap<Uuid, (usize, usize)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // Every write checks before it mutates, so a panic elsewhere cannot leave
        // the log half-written and the poison flag carries no information.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    fn stream(&self, aggregate_type: &str, aggregate_id: &str) -> Option<usize> {
        self.stream_index
            .get(aggregate_type)
            .and_then(|streams| streams.get(aggregate_id))
            .copied()
    }

    fn envelope(&self, index: usize) -> Envelope {
        let stored = self.events.get(index);
        let stream = &self.streams[stored.stream];
        Envelope {
            event_id: stored.event_id,
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
            sequence: stored.sequence,
            position: index as u64 + 1,
            event_name: stored.event_name.clone().into_owned(),
            event_version: stored.event_version,
            recorded_at: stored.recorded_at,
            metadata: stored.metadata.clone(),
            payload: stored.payload.clone(),
        }
    }

    /// The first event of `events` whose id the log or the batch already has.
    fn reused_id<'e>(&self, events: &'e [NewEvent]) -> Option<&'e NewEvent> {
        let mut last = self.events.last().map(|stored| stored.event_id);
        for (n, event) in events.iter().enumerate() {
            // An id above every id so far is new: the common case costs no lookup.
            if last.is_some_and(|last| event.event_id <= last) {
                let used = match self.event_ids.as_ref() {
                    Some(ids) => ids.contains(&event.event_id),
                    // Still in order: the stored ids are sorted.
                    None => self.events.contains_sorted(event.event_id),
                };
                if used
                    || events[..n]
                        .iter()
                        .any(|earlier| earlier.event_id == event.event_id)
                {
                    return Some(event);
                }
            }
            last = Some(last.map_or(event.event_id, |last| last.max(event.event_id)));
        }
        None
    }

    /// Keeps the id lookup correct for an event about to be stored.
    fn index_id(&mut self, id: Uuid) {
        let in_order = self.events.last().is_none_or(|stored| id > stored.event_id);
        if self.event_ids.is_none() && !in_order {
            self.event_ids = Some(self.events.iter().map(|stored| stored.event_id).collect());
        }
        if let Some(ids) = self.event_ids.as_mut() {
            ids.insert(id);
        }
    }

    /// The log indexes of the events after position `after` that `query`
    /// matches, ascending: an item with tags looks at the events carrying
    /// its first tag, an item of names alone at every event.
    fn matching(&self, query: &EventQuery, after: u64) -> Vec<usize> {
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        let matches = |index: &usize| {
            let stored = self.events.get(*index);
            query.matches(&stored.event_name, &stored.tags)
        };
        let mut found = Vec::new();
        for item in query.items() {
            match item.tags.first() {
                Some(tag) => {
                    let carrying = self.tagged.get(tag).map_or(&[][..], Vec::as_slice);
                    let from = carrying.partition_point(|&index| index < start);
                    found.extend(carrying[from..].iter().copied().filter(matches));
                }
                None => found.extend((start..self.events.len()).filter(matches)),
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Appends a batch at the end of its stream if nothing `condition`'s
    /// query matches was recorded after its position.
    fn append_if(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_batch(aggregate_type, aggregate_id, &events)?;
        let stream = self.stream(aggregate_type, aggregate_id);
        if let Some(command_id) = command_id(&events)
            && stream.is_some_and(|stream| self.streams[stream].commands.contains_key(&command_id))
        {
            return Err(StoreError::DuplicateCommand {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                command_id,
            });
        }
        if let Some(&index) = self.matching(&condition.query, condition.after).first() {
            return Err(StoreError::BoundaryChanged {
                after: condition.after,
                position: index as u64 + 1,
            });
        }
        let version = stream.map_or(0, |stream| self.streams[stream].events.len()) as u64;
        self.append(aggregate_type, aggregate_id, version, events)
    }

    /// Appends a batch and writes its deadlines, or neither.
    fn append_decision(&mut self, append: StreamAppend) -> Result<Vec<Envelope>, StoreError> {
        let StreamAppend {
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
            deadlines,
        } = append;
        if deadlines.is_empty() {
            return self.append(&aggregate_type, &aggregate_id, expected_version, events);
        }
        check_writes(&aggregate_type, &aggregate_id, &deadlines)?;
        self.deadlines
            .check(&aggregate_type, &aggregate_id, &deadlines)?;
        let appended = self.append(&aggregate_type, &aggregate_id, expected_version, events)?;
        self.deadlines
            .write(&aggregate_type, &aggregate_id, deadlines);
        Ok(appended)
    }

    fn append(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_batch(aggregate_type, aggregate_id, &events)?;
        let stream = self.stream(aggregate_type, aggregate_id);
        let command_id = command_id(&events);
        if let Some(command_id) = command_id
            && stream.is_some_and(|stream| self.streams[stream].commands.contains_key(&command_id))
        {
            return Err(StoreError::DuplicateCommand {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                command_id,
            });
        }
        let actual = stream.map_or(0, |stream| self.streams[stream].events.len()) as u64;
        if actual != expected_version {
            return Err(Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected: expected_version,
                actual,
            }
            .into());
        }
        if let Some(event) = self.reused_id(&events) {
            return Err(StoreError::Rejected {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                reason: format!("event id {} is already used", event.event_id),
            });
        }
        // A batch of deadlines alone checks the version, and adds no stream.
        if events.is_empty() {
            return Ok(Vec::new());
        }

        let stream = match stream {
            Some(stream) => stream,
            None => {
                self.streams.push(Stream {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    events: Vec::new(),
                    commands: HashMap::default(),
                });
                let index = self.streams.len() - 1;
                self.stream_index
                    .entry(aggregate_type.to_owned())
                    .or_default()
                    .insert(aggregate_id.to_owned(), index);
                index
            }
        };
        let recorded_at = now();
        let first_index = self.events.len();
        let mut committed = Vec::with_capacity(events.len());
        // Each event keeps its own command id: the runs of one id, usually
        // the whole batch, are what `load_command` finds.
        let mut runs: Vec<(Uuid, usize, usize)> = Vec::new();
        for (offset, event) in events.into_iter().enumerate() {
            if let Some(command_id) = event.metadata.command_id {
                match runs.last_mut() {
                    Some((id, _, count)) if *id == command_id => *count += 1,
                    _ => runs.push((command_id, first_index + offset, 1)),
                }
            }
            let sequence = expected_version + offset as u64 + 1;
            self.index_id(event.event_id);
            committed.push(Envelope {
                event_id: event.event_id,
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                position: (first_index + offset) as u64 + 1,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata.clone(),
                payload: event.payload.clone(),
            });
            for tag in &event.tags {
                self.tagged
                    .entry(tag.clone())
                    .or_default()
                    .push(self.events.len());
            }
            self.events.push(Stored {
                event_id: event.event_id,
                stream,
                sequence,
                event_name: Cow::Borrowed(event.event_name),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata,
                payload: event.payload,
                tags: event.tags.into_boxed_slice(),
            });
        }
        let stream = &mut self.streams[stream];
        stream.events.extend(first_index..self.events.len());
        for (command_id, first, count) in runs {
            stream.commands.insert(command_id, (first, count));
        }
        Ok(committed)
    }
}

impl EventStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        ready(
            self.log()
                .append(aggregate_type, aggregate_id, expected_version, events),
        )
    }

    fn append_streams(
        &self,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = Vec<Result<Vec<Envelope>, StoreError>>> + Send {
        let mut log = self.log();
        let outcomes = appends
            .into_iter()
            .map(|append| log.append_decision(append))
            .collect();
        ready(outcomes)
    }

    fn read_matching(
        &self,
        query: EventQuery,
        after: u64,
    ) -> impl Future<Output = Result<Matching, StoreError>> + Send {
        let log = self.log();
        let events = log
            .matching(&query, after)
            .into_iter()
            .map(|index| log.envelope(index))
            .collect();
        ready(Ok(Matching {
            events,
            head: log.events.len() as u64,
        }))
    }

    fn append_if(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        ready(
            self.log()
                .append_if(aggregate_type, aggregate_id, events, &condition),
        )
    }

    fn due_deadlines(
        &self,
        query: DueQuery,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        ready(Ok(self.log().deadlines.due(&query)))
    }

    fn load_deadlines(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        ready(Ok(self.log().deadlines.of(aggregate_type, aggregate_id)))
    }

    fn retry_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let stream = (aggregate_type.to_owned(), aggregate_id.to_owned());
        ready(Ok(self.log().deadlines.retry(stream, deadline_id, at)))
    }

    fn deadline_failed(
        &self,
        failure: DeadlineFailure,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.log().deadlines.failed(failure);
        ready(Ok(()))
    }

    fn change_deadlines(
        &self,
        changes: DeadlineChanges,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.log().deadlines.change(&changes))
    }

    fn deadlines(
        &self,
        filter: DeadlineFilter,
    ) -> impl Future<Output = Result<Vec<StoredDeadline>, StoreError>> + Send {
        ready(Ok(self.log().deadlines.list(&filter)))
    }

    fn deadline_counts(
        &self,
        now: DateTime<Utc>,
        owner_types: Option<Vec<String>>,
    ) -> impl Future<Output = Result<DeadlineCounts, StoreError>> + Send {
        ready(Ok(self.log().deadlines.counts(now, owner_types.as_deref())))
    }

    fn claim_deadline(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let stream = (aggregate_type.to_owned(), aggregate_id.to_owned());
        ready(Ok(self.log().deadlines.claim(
            stream,
            deadline_id,
            now,
            until,
        )))
    }

    fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let log = self.log();
        let skip = usize::try_from(from_sequence.saturating_sub(1)).unwrap_or(usize::MAX);
        let events = match log.stream(aggregate_type, aggregate_id) {
            Some(stream) => log.streams[stream]
                .events
                .iter()
                .skip(skip)
                .map(|&index| log.envelope(index))
                .collect(),
            None => Vec::new(),
        };
        ready(Ok(events))
    }

    fn read_all(
        &self,
        from_position: u64,
        limit: impl Into<ReadLimit> + Send,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let limit = limit.into();
        let log = self.log();
        let start = usize::try_from(from_position.saturating_sub(1)).unwrap_or(usize::MAX);
        let end = start.saturating_add(limit.events).min(log.events.len());
        let mut events = Vec::with_capacity(end.saturating_sub(start).min(1_024));
        let mut bytes = 0;
        for index in start..end {
            if !limit.admits(events.len(), bytes) {
                break;
            }
            let envelope = log.envelope(index);
            bytes += weight(&envelope);
            events.push(envelope);
        }
        ready(Ok(events))
    }

    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.log().events.len() as u64))
    }

    fn load_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let log = self.log();
        let batch = log
            .stream(aggregate_type, aggregate_id)
            .and_then(|stream| log.streams[stream].commands.get(&command_id).copied());
        let events = batch.map_or_else(Vec::new, |(first, count)| {
            (first..first + count)
                .map(|index| log.envelope(index))
                .collect()
        });
        ready(Ok(events))
    }

    fn load_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        ready(Ok(self.log().snapshots.get(&key).cloned()))
    }

    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let key = (
            snapshot.aggregate_type.clone(),
            snapshot.aggregate_id.clone(),
        );
        let mut log = self.log();
        match log.snapshots.get(&key) {
            Some(newer) if newer.version > snapshot.version => {}
            _ => {
                log.snapshots.insert(key, snapshot);
            }
        }
        ready(Ok(()))
    }
}
