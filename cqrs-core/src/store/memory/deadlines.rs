//! The memory store's pending deadlines: by stream, and in the order they
//! fire.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use foldhash::HashMap;
use uuid::Uuid;

use crate::store::deadline::{check_writes, gone, origin_applies};
use crate::store::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DeadlineWrite, DueQuery,
    ScheduledDeadline, StoreError, StoredDeadline, stream_hash,
};

/// Aggregate type and id.
type Stream = (String, String);

/// The pending deadlines, by stream and in firing order.
#[derive(Debug, Default)]
pub(super) struct PendingDeadlines {
    /// Each stream's pending deadlines.
    by_stream: HashMap<Stream, Vec<Pending>>,
    /// The time to fire and the id of each deadline that is not parked, to
    /// the stream that holds it.
    firing: BTreeMap<(DateTime<Utc>, Uuid), Stream>,
    /// The origin of the last change with one to each deadline (stream,
    /// name and key), kept after it fired or was cancelled.
    origins: HashMap<(Stream, String, String), u64>,
}

/// One pending deadline and how firing it went.
#[derive(Debug)]
struct Pending {
    deadline: ScheduledDeadline,
    /// When it is fired next: when it is due, or a retry's time.
    fire_at: DateTime<Utc>,
    attempts: u32,
    last_error: Option<String>,
    parked: bool,
    /// Claimed by a fire until `fire_at`: a cancel leaves it be.
    claimed: bool,
}

impl Pending {
    fn stored(&self, stream: &Stream) -> StoredDeadline {
        StoredDeadline {
            aggregate_type: stream.0.clone(),
            aggregate_id: stream.1.clone(),
            deadline: self.deadline.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            parked: self.parked,
        }
    }
}

impl PendingDeadlines {
    /// Refuses a fire whose deadline is no longer pending, before anything
    /// of its batch is written.
    pub(super) fn check<'a>(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        writes: impl IntoIterator<Item = &'a DeadlineWrite>,
    ) -> Result<(), StoreError> {
        let stream = (aggregate_type.to_owned(), aggregate_id.to_owned());
        let pending = self.by_stream.get(&stream).map_or(&[][..], Vec::as_slice);
        for write in writes {
            if let DeadlineWrite::Consume {
                name,
                key,
                deadline_id,
            } = write
                && !pending
                    .iter()
                    .any(|pending| pending.deadline.deadline_id == *deadline_id)
            {
                return Err(gone(aggregate_type, aggregate_id, name, key));
            }
        }
        Ok(())
    }

    pub(super) fn write(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        writes: Vec<DeadlineWrite>,
    ) {
        let stream = (aggregate_type.to_owned(), aggregate_id.to_owned());
        let pending = self.by_stream.entry(stream.clone()).or_default();
        for write in writes {
            let (name, key) = (write.name(), write.key());
            if let Some(index) = pending
                .iter()
                .position(|pending| pending.deadline.name == name && pending.deadline.key == key)
                // A cancel leaves a deadline being fired be.
                && !(matches!(write, DeadlineWrite::Cancel { .. }) && pending[index].claimed)
            {
                let removed = pending.swap_remove(index);
                if !removed.parked {
                    self.firing
                        .remove(&(removed.fire_at, removed.deadline.deadline_id));
                }
            }
            if let DeadlineWrite::Schedule(mut deadline) = write {
                // The precision the SQL stores keep.
                deadline.due_at =
                    DateTime::from_timestamp_micros(deadline.due_at.timestamp_micros())
                        .unwrap_or(deadline.due_at);
                self.firing
                    .insert((deadline.due_at, deadline.deadline_id), stream.clone());
                pending.push(Pending {
                    fire_at: deadline.due_at,
                    deadline,
                    attempts: 0,
                    last_error: None,
                    parked: false,
                    claimed: false,
                });
            }
        }
        if pending.is_empty() {
            self.by_stream.remove(&stream);
        }
    }

    /// Applies an owner's changes outside an append, or none of them.
    pub(super) fn change(&mut self, changes: &DeadlineChanges) -> Result<(), StoreError> {
        let (owner_type, owner_id) = (&*changes.owner_type, &*changes.owner_id);
        check_writes(owner_type, owner_id, &changes.writes)?;
        let (consumes, last) = changes.net();
        self.check(owner_type, owner_id, consumes.iter().copied())?;
        let stream = (owner_type.to_owned(), owner_id.to_owned());
        let mut applied: Vec<DeadlineWrite> = consumes.into_iter().cloned().collect();
        for write in last {
            let slot = (
                stream.clone(),
                write.name().to_owned(),
                write.key().to_owned(),
            );
            let pending = self.by_stream.get(&stream).is_some_and(|pending| {
                pending.iter().any(|pending| {
                    pending.deadline.name == write.name() && pending.deadline.key == write.key()
                })
            });
            let last = self.origins.get(&slot).copied();
            if origin_applies(changes.origin, last, write, pending) {
                applied.push(write.clone());
            }
        }
        if let Some(origin) = changes.origin {
            for write in &changes.writes {
                let slot = (
                    stream.clone(),
                    write.name().to_owned(),
                    write.key().to_owned(),
                );
                let last = self.origins.entry(slot).or_insert(origin);
                *last = (*last).max(origin);
            }
        }
        self.write(owner_type, owner_id, applied);
        Ok(())
    }

    /// Claims a due deadline for a fire until `until`; false if it is not
    /// pending, parked, or not due at `now`.
    pub(super) fn claim(
        &mut self,
        stream: Stream,
        deadline_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> bool {
        let due = self
            .find(&stream, deadline_id)
            .is_some_and(|pending| !pending.parked && pending.fire_at <= now);
        due && self.refire(stream, deadline_id, Some(until), |pending| {
            pending.claimed = true;
        })
    }

    pub(super) fn due(&self, query: &DueQuery) -> Vec<StoredDeadline> {
        self.firing
            .range(..=(query.now, Uuid::max()))
            .filter(|((fire_at, _), stream)| {
                query.matches(&stream.0, stream_hash(&stream.0, &stream.1), *fire_at)
            })
            .take(query.limit)
            .filter_map(|((_, deadline_id), stream)| {
                Some(self.find(stream, *deadline_id)?.stored(stream))
            })
            .collect()
    }

    pub(super) fn of(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<StoredDeadline> {
        let stream = (aggregate_type.to_owned(), aggregate_id.to_owned());
        let mut deadlines: Vec<StoredDeadline> = self
            .by_stream
            .get(&stream)
            .into_iter()
            .flatten()
            .map(|pending| pending.stored(&stream))
            .collect();
        deadlines.sort_by_key(|stored| (stored.deadline.due_at, stored.deadline.deadline_id));
        deadlines
    }

    pub(super) fn list(&self, filter: &DeadlineFilter) -> Vec<StoredDeadline> {
        let mut listed: Vec<StoredDeadline> = self
            .by_stream
            .iter()
            .flat_map(|(stream, pending)| pending.iter().map(move |pending| (stream, pending)))
            .filter(|(stream, pending)| {
                filter.matches(&stream.0, &stream.1, pending.deadline.due_at)
            })
            .map(|(stream, pending)| pending.stored(stream))
            .collect();
        listed.sort_by_key(|stored| (stored.deadline.due_at, stored.deadline.deadline_id));
        listed.truncate(filter.limit);
        listed
    }

    pub(super) fn counts(&self, now: DateTime<Utc>, types: Option<&[String]>) -> DeadlineCounts {
        let mut counts = DeadlineCounts::default();
        let pending = self
            .by_stream
            .iter()
            .filter(|(stream, _)| types.is_none_or(|types| types.contains(&stream.0)))
            .flat_map(|(_, pending)| pending);
        for pending in pending {
            if pending.parked {
                counts.parked += 1;
                continue;
            }
            counts.pending += 1;
            let due_at = pending.deadline.due_at;
            counts.due += u64::from(due_at <= now);
            counts.earliest_due = Some(counts.earliest_due.map_or(due_at, |t| t.min(due_at)));
        }
        counts
    }

    pub(super) fn failed(&mut self, failure: DeadlineFailure) {
        let stream = (failure.aggregate_type, failure.aggregate_id);
        let error = failure.error;
        self.refire(stream, failure.deadline_id, failure.retry_at, |pending| {
            pending.attempts += 1;
            pending.last_error = Some(error);
            pending.claimed = false;
        });
    }

    pub(super) fn retry(&mut self, stream: Stream, deadline_id: Uuid, at: DateTime<Utc>) -> bool {
        self.refire(stream, deadline_id, Some(at), |pending| {
            pending.attempts = 0;
            pending.last_error = None;
            pending.claimed = false;
        })
    }

    /// Fires a pending deadline next at `at`, or parks it; false if it is
    /// not pending.
    fn refire(
        &mut self,
        stream: Stream,
        deadline_id: Uuid,
        at: Option<DateTime<Utc>>,
        change: impl FnOnce(&mut Pending),
    ) -> bool {
        let Some(pending) = self.by_stream.get_mut(&stream).and_then(|pending| {
            pending
                .iter_mut()
                .find(|pending| pending.deadline.deadline_id == deadline_id)
        }) else {
            return false;
        };
        if !pending.parked {
            self.firing.remove(&(pending.fire_at, deadline_id));
        }
        change(pending);
        match at {
            Some(at) => {
                pending.fire_at = at;
                pending.parked = false;
                self.firing.insert((at, deadline_id), stream);
            }
            None => pending.parked = true,
        }
        true
    }

    fn find(&self, stream: &Stream, deadline_id: Uuid) -> Option<&Pending> {
        self.by_stream
            .get(stream)?
            .iter()
            .find(|pending| pending.deadline.deadline_id == deadline_id)
    }
}
