//! [`Clock`]: where an app reads the time its handlers decide with.
//!
//! A command handler that needs the time asks its
//! [`CommandContext::now`](crate::CommandContext::now) rather than the
//! system, so a test can set it: the app reads [`SystemClock`] unless
//! [`CqrsBuilder::clock`](crate::CqrsBuilder::clock) gives it another, and
//! [`TestClock`] stands still until the test moves it. The stores stamp
//! each event's `recorded_at` with their own time, not the clock's.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The time as an app sees it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's time, the clock of every app unless told otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is moved: its clones share one
/// time, so a test keeps a clone and moves the app's clock with it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::{Clock, TestClock};
///
/// let clock = TestClock::at("2026-12-07T10:00:00Z".parse().unwrap());
/// let app_clock = clock.clone();
/// clock.advance(Duration::from_secs(15 * 60));
/// assert_eq!(app_clock.now().to_rfc3339(), "2026-12-07T10:15:00+00:00");
/// ```
#[derive(Debug, Clone)]
pub struct TestClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl TestClock {
    /// A clock that reads `time` until it is moved.
    pub fn at(time: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(time)),
        }
    }

    /// Moves the time forward by `by` (to the latest time there is, past
    /// it).
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        *now = now
            .checked_add_signed(by)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }

    /// Sets the time to `time`, earlier or later.
    pub fn set(&self, time: DateTime<Utc>) {
        *self.lock() = time;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A time is written whole: a panic elsewhere cannot leave it torn.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}
