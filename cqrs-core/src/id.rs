//! Time-ordered ids (UUIDv7) for events and correlations, made without a
//! system call each.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// The last timestamp and counter handed out, as `millis << 12 | counter`:
/// shared by all threads, so every id of this process is larger than the one
/// before it.
static LAST: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// xorshift64 state for the random bits.
    static RANDOM: Cell<u64> = Cell::new(
        // The standard library seeds `RandomState` from the operating system
        // once per thread; hashing the thread id with it seeds this one.
        RandomState::new().hash_one(std::thread::current().id()) | 1,
    );
}

/// A new UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter
/// within the millisecond, and 62 random bits. Strictly increasing across
/// the process: when more than 4,096 ids are made in one millisecond, the
/// timestamp runs ahead by a millisecond.
pub(crate) fn new_id() -> Uuid {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let floor = (millis & 0xffff_ffff_ffff) << 12;
    let mut last = LAST.load(Ordering::Relaxed);
    let stamp = loop {
        let next = floor.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(actual) => last = actual,
        }
    };
    let random = RANDOM.with(|cell| {
        let mut random = cell.get();
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        cell.set(random);
        random
    });
    let high = (stamp >> 12) << 16 | 0x7000 | (stamp & 0xfff);
    let low = 0x8000_0000_0000_0000 | (random >> 2);
    Uuid::from_u64_pair(high, low)
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_are_version_7_and_increase() {
        let ids: Vec<_> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(
            ids.iter()
                .all(|id| matches!(id.get_variant(), uuid::Variant::RFC4122))
        );
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        let (seconds, _) = ids[0]
            .get_timestamp()
            .expect("v7 has a timestamp")
            .to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970");
        assert!(now.as_secs().abs_diff(seconds) <= 1);
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| new_id()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<_> = threads
            .into_iter()
            .flat_map(|thread| {
                let ids = thread.join().expect("the thread finishes");
                assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
                ids
            })
            .collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "unique");
    }
}
