//! The app's clock: a command handler reads the time from its context, the
//! system's unless the app or the fixture is given a `TestClock`, which a
//! test moves instead of waiting.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::prelude::*;
use cqrs_core::{Clock, SystemClock, TestClock};
use serde::{Deserialize, Serialize};

/// How long a hold lasts.
const HOLD: TimeDelta = TimeDelta::minutes(15);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceHold;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseExpired;

#[derive(Debug, Clone, Command)]
pub enum HoldCommand {
    PlaceHold(PlaceHold),
    ReleaseExpired(ReleaseExpired),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPlaced {
    pub expires_at: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum HoldEvent {
    HoldPlaced(HoldPlaced),
    HoldReleased(HoldReleased),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HoldError {
    #[error("the hold runs until {0}")]
    NotExpired(DateTime<Utc>),
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "clock_test.hold", command = HoldCommand, event = HoldEvent, error = HoldError)]
pub struct Hold {
    expires_at: Option<DateTime<Utc>>,
    released: bool,
}

#[aggregate_impl]
impl Hold {
    #[command_handler(create)]
    fn place(&self, _: PlaceHold, context: &CommandContext<'_>) -> Result<HoldPlaced, HoldError> {
        Ok(HoldPlaced {
            expires_at: context.now() + HOLD,
        })
    }

    #[command_handler]
    fn release(
        &self,
        _: ReleaseExpired,
        context: &CommandContext<'_>,
    ) -> Result<Option<HoldReleased>, HoldError> {
        let now = context.now();
        match self.expires_at {
            _ if self.released => Ok(None),
            Some(expires_at) if now < expires_at => Err(HoldError::NotExpired(expires_at)),
            _ => Ok(Some(HoldReleased { at: now })),
        }
    }

    #[apply]
    fn placed(&mut self, event: &HoldPlaced) {
        self.expires_at = Some(event.expires_at);
    }

    #[apply]
    fn released(&mut self, _: &HoldReleased) {
        self.released = true;
    }
}

fn start() -> DateTime<Utc> {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

#[test]
fn a_fixture_decides_at_the_time_its_clock_reads() {
    let clock = TestClock::at(start());
    TestFixture::<Hold>::new()
        .with_clock(clock.clone())
        .given_no_events()
        .when(PlaceHold)
        .then_expect_events([HoldPlaced {
            expires_at: start() + HOLD,
        }]);
    let placed = HoldPlaced {
        expires_at: start() + HOLD,
    };
    TestFixture::<Hold>::new()
        .with_clock(clock.clone())
        .given([placed.clone().into()])
        .when(ReleaseExpired)
        .then_expect_error(HoldError::NotExpired(start() + HOLD));
    clock.advance(Duration::from_secs(15 * 60));
    TestFixture::<Hold>::new()
        .with_clock(clock)
        .given([placed.into()])
        .when(ReleaseExpired)
        .then_expect_events([HoldReleased { at: start() + HOLD }]);
}

#[tokio::test]
async fn an_app_decides_at_the_time_its_clock_reads() {
    let clock = TestClock::at(start());
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .without_processors()
        .clock(clock.clone())
        .build()
        .unwrap();
    let placed = app.execute("room-7", PlaceHold).await.unwrap();
    assert_eq!(
        placed.events[0].payload,
        HoldEvent::from(HoldPlaced {
            expires_at: start() + HOLD
        })
    );
    clock.advance(Duration::from_secs(14 * 60));
    let early = app.execute("room-7", ReleaseExpired).await.unwrap_err();
    assert!(
        matches!(early, CommandError::Domain(HoldError::NotExpired(at)) if at == start() + HOLD),
        "{early:?}"
    );
    clock.set(start() + HOLD);
    let released = app.execute("room-7", ReleaseExpired).await.unwrap();
    assert_eq!(
        released.events[0].payload,
        HoldEvent::from(HoldReleased { at: start() + HOLD })
    );
}

#[tokio::test]
async fn without_a_clock_an_app_reads_the_systems() {
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap();
    let before = SystemClock.now();
    let placed = app.execute("room-8", PlaceHold).await.unwrap();
    let after = SystemClock.now();
    let HoldEvent::HoldPlaced(placed) = &placed.events[0].payload else {
        panic!("{placed:?}");
    };
    assert!(before + HOLD <= placed.expires_at && placed.expires_at <= after + HOLD);
}
