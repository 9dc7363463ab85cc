use std::collections::{HashMap, HashSet};
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{EventStore, Snapshot, StoreError, check_stream, command_id, now};
use crate::envelope::{Envelope, NewEvent};
use crate::error::Conflict;

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
/// # futures_lite_block_on(async {
/// let store = MemoryStore::new();
/// assert!(store.read_all(1, 100).await.unwrap().is_empty());
/// # });
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Stream {
    /// Indexes of the stream's events in the log.
    events: Vec<usize>,
    /// Command ids of the batches appended to it.
    commands: HashSet<Uuid>,
}

#[derive(Debug, Default)]
struct Log {
    /// Index `i` holds position `i + 1`.
    events: Vec<Envelope>,
    /// Aggregate type, then aggregate id, to the stream.
    streams: HashMap<String, HashMap<String, Stream>>,
    event_ids: HashSet<Uuid>,
    /// Aggregate type and id to the newest snapshot.
    snapshots: HashMap<(String, String), Snapshot>,
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
    fn stream(&self, aggregate_type: &str, aggregate_id: &str) -> Option<&Stream> {
        self.streams
            .get(aggregate_type)
            .and_then(|streams| streams.get(aggregate_id))
    }

    fn stream_events(&self, aggregate_type: &str, aggregate_id: &str) -> &[usize] {
        self.stream(aggregate_type, aggregate_id)
            .map_or(&[], |stream| stream.events.as_slice())
    }

    fn append(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Envelope>, StoreError> {
        check_stream(aggregate_type, aggregate_id)?;
        let stream = self.stream(aggregate_type, aggregate_id);
        let command_id = command_id(&events);
        if let Some(command_id) = command_id
            && stream.is_some_and(|stream| stream.commands.contains(&command_id))
        {
            return Err(StoreError::DuplicateCommand {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                command_id,
            });
        }
        let actual = stream.map_or(0, |stream| stream.events.len()) as u64;
        if actual != expected_version {
            return Err(Conflict {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                expected: expected_version,
                actual,
            }
            .into());
        }
        let mut batch_ids = HashSet::with_capacity(events.len());
        for event in &events {
            if self.event_ids.contains(&event.event_id) || !batch_ids.insert(event.event_id) {
                return Err(StoreError::Rejected {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    reason: format!("event id {} is already used", event.event_id),
                });
            }
        }

        let recorded_at = now();
        let first_index = self.events.len();
        let committed: Vec<Envelope> = events
            .into_iter()
            .enumerate()
            .map(|(offset, event)| Envelope {
                event_id: event.event_id,
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                sequence: expected_version + offset as u64 + 1,
                position: (first_index + offset) as u64 + 1,
                event_name: event.event_name.to_owned(),
                event_version: event.event_version,
                recorded_at,
                metadata: event.metadata,
                payload: event.payload,
            })
            .collect();
        self.event_ids.extend(batch_ids);
        self.events.extend(committed.iter().cloned());
        let stream = self
            .streams
            .entry(aggregate_type.to_owned())
            .or_default()
            .entry(aggregate_id.to_owned())
            .or_default();
        stream.events.extend(first_index..self.events.len());
        stream.commands.extend(command_id);
        Ok(committed)
    }
}

impl EventStore for MemoryStore {
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

    fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from_sequence: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let log = self.log();
        let stream = log.stream_events(aggregate_type, aggregate_id);
        let skip = usize::try_from(from_sequence.saturating_sub(1)).unwrap_or(usize::MAX);
        let events = stream
            .iter()
            .skip(skip)
            .map(|&index| log.events[index].clone())
            .collect();
        ready(Ok(events))
    }

    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>, StoreError>> + Send {
        let log = self.log();
        let start = usize::try_from(from_position.saturating_sub(1)).unwrap_or(usize::MAX);
        let events = log
            .events
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(limit)
            .cloned()
            .collect();
        ready(Ok(events))
    }

    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.log().events.len() as u64))
    }

    fn has_command(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        command_id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let log = self.log();
        let found = log
            .stream(aggregate_type, aggregate_id)
            .is_some_and(|stream| stream.commands.contains(&command_id));
        ready(Ok(found))
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
