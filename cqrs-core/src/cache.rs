//! Aggregate states kept between commands, so a hot aggregate is not replayed
//! from the store on every command.

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt};

use crate::aggregate::Aggregate;

/// An aggregate's state and the number of events it reflects.
#[derive(Debug)]
pub(crate) struct Loaded<A> {
    pub(crate) state: A,
    pub(crate) version: u64,
}

impl<A: Aggregate> Loaded<A> {
    /// The state before the first event.
    pub(crate) fn initial() -> Self {
        Self {
            state: A::initial(),
            version: 0,
        }
    }
}

/// The cache entry of one aggregate instance. Its lock serializes the commands
/// this process sends to the instance; the value is `None` until loaded, and
/// again whenever a command could not tell what the store holds.
pub(crate) type Slot<A> = async_lock::Mutex<Option<Loaded<A>>>;

#[derive(Debug)]
pub(crate) struct Cache<A> {
    slots: Mutex<HashMap<String, Arc<Slot<A>>>>,
    capacity: usize,
}

impl<A: Aggregate> Cache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The entry of `aggregate_id`, created empty if absent.
    pub(crate) fn slot(&self, aggregate_id: &str) -> Arc<Slot<A>> {
        // Only plain map operations run under this lock; nothing can panic
        // half-way through them, so a poisoned lock holds a consistent map.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(aggregate_id) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.capacity {
            evict(&mut slots, self.capacity);
        }
        let slot = Arc::new(async_lock::Mutex::new(None));
        slots.insert(aggregate_id.to_owned(), Arc::clone(&slot));
        slot
    }
}

/// Drops idle entries (no command holds them) until the map is a quarter below
/// capacity, so the scan is paid once per `capacity / 4` new aggregates. Which
/// idle entries go is the map's iteration order, close enough to random.
fn evict<A>(slots: &mut HashMap<String, Arc<Slot<A>>>, capacity: usize) {
    let target = capacity - capacity / 4;
    let mut excess = slots.len().saturating_sub(target);
    slots.retain(|_, slot| {
        if excess > 0 && Arc::strong_count(slot) == 1 {
            excess -= 1;
            false
        } else {
            true
        }
    });
}
