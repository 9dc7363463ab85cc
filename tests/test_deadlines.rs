//! Deadlines an aggregate schedules and cancels as part of its decisions,
//! driven by the fixture's clock: none fires before its time, a cancelled
//! or replaced one never fires, cancelling one that fired does nothing, and
//! a deadline handler decides (and schedules) like a command handler.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::prelude::*;
use cqrs_core::{DeadlineChange, Decision, Due, SqliteStore, TestClock, Uuid};
use serde::{Deserialize, Serialize};

const HOLD: Duration = Duration::from_secs(15 * 60);
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceHold {
    pub room: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemindGuest {
    /// Minutes before expiry at which to remind the guest.
    pub minutes_left: Vec<u32>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtendHold {
    pub by_minutes: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayHold;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseAt {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Command)]
pub enum HoldCommand {
    Place(PlaceHold),
    Remind(RemindGuest),
    Extend(ExtendHold),
    Pay(PayHold),
    ReleaseAt(ReleaseAt),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPlaced {
    pub room: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldExtended {
    pub until: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPaid;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    pub room: String,
    pub due_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestReminded {
    pub minutes_left: u32,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum HoldEvent {
    Placed(HoldPlaced),
    Extended(HoldExtended),
    Paid(HoldPaid),
    Released(HoldReleased),
    Reminded(GuestReminded),
}

/// The hold lapses: its room goes back on sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
#[deadline_type(name = "deadline_test.hold.expires")]
pub struct HoldExpires {
    pub room: String,
}

/// A reminder to the guest, one per minute mark, keyed by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
pub struct Reminder {
    pub minutes_left: u32,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HoldError {
    #[error("the hold was released")]
    Released,
    #[error("the hold is paid")]
    Paid,
    #[error("a reminder with no time left")]
    TooLate,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "deadline_test.hold", command = HoldCommand, event = HoldEvent, error = HoldError)]
pub struct Hold {
    room: String,
    expires_at: Option<DateTime<Utc>>,
    paid: bool,
    released: bool,
}

#[aggregate_impl]
impl Hold {
    #[command_handler(create)]
    fn place(&self, command: PlaceHold) -> Result<(HoldPlaced, Schedule<HoldExpires>), HoldError> {
        let room = command.room.clone();
        Ok((
            HoldPlaced { room: command.room },
            Schedule::after(HOLD, HoldExpires { room }),
        ))
    }

    /// One reminder per minute mark before the hold expires, side by side.
    #[command_handler]
    fn schedule_reminders(
        &self,
        command: RemindGuest,
    ) -> Result<Vec<Schedule<Reminder>>, HoldError> {
        self.open()?;
        Ok(command
            .minutes_left
            .iter()
            .map(|&minutes_left| {
                let after = HOLD - MINUTE * minutes_left;
                Schedule::after(after, Reminder { minutes_left }).key(minutes_left.to_string())
            })
            .collect())
    }

    /// Scheduling the same deadline again replaces it.
    #[command_handler]
    fn extend(
        &self,
        command: ExtendHold,
        context: &CommandContext<'_>,
    ) -> Result<(HoldExtended, Schedule<HoldExpires>), HoldError> {
        self.open()?;
        let until = context.now() + TimeDelta::minutes(command.by_minutes);
        let room = self.room.clone();
        Ok((
            HoldExtended { until },
            Schedule::at(until, HoldExpires { room }),
        ))
    }

    /// Cancelling a deadline that already fired is not an error.
    #[command_handler]
    fn pay(&self, _: PayHold) -> Result<(HoldPaid, Cancel<HoldExpires>), HoldError> {
        if self.paid {
            return Err(HoldError::Paid);
        }
        Ok((HoldPaid, Cancel::new()))
    }

    /// A due time already past falls due at once.
    #[command_handler]
    fn release_at(&self, command: ReleaseAt) -> Result<Schedule<HoldExpires>, HoldError> {
        self.open()?;
        let room = self.room.clone();
        Ok(Schedule::at(command.at, HoldExpires { room }))
    }

    #[deadline]
    fn expires(
        &self,
        deadline: HoldExpires,
        context: &DeadlineContext<'_>,
    ) -> Result<(Option<HoldReleased>, Cancel<Reminder>), HoldError> {
        let released = (!self.paid && !self.released).then(|| HoldReleased {
            room: deadline.room,
            due_at: context.due_at,
            at: context.now(),
        });
        // The reminder of the last minute, if it is still pending.
        Ok((released, Cancel::new().key("1")))
    }

    #[deadline]
    async fn remind(&self, reminder: Reminder) -> Result<Option<GuestReminded>, HoldError> {
        if reminder.minutes_left == 0 {
            return Err(HoldError::TooLate);
        }
        Ok((!self.paid && !self.released).then_some(GuestReminded {
            minutes_left: reminder.minutes_left,
        }))
    }

    fn open(&self) -> Result<(), HoldError> {
        match () {
            _ if self.released => Err(HoldError::Released),
            _ if self.paid => Err(HoldError::Paid),
            _ => Ok(()),
        }
    }

    #[apply]
    fn placed(&mut self, event: &HoldPlaced) {
        self.room.clone_from(&event.room);
    }

    #[apply]
    fn extended(&mut self, event: &HoldExtended) {
        self.expires_at = Some(event.until);
    }

    #[apply]
    fn paid(&mut self, _: &HoldPaid) {
        self.paid = true;
    }

    #[apply]
    fn released(&mut self, _: &HoldReleased) {
        self.released = true;
    }

    #[apply]
    fn reminded(&mut self, _: &GuestReminded) {}
}

fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn place() -> PlaceHold {
    PlaceHold { room: "101".into() }
}

fn placed() -> HoldPlaced {
    HoldPlaced { room: "101".into() }
}

fn expires() -> HoldExpires {
    HoldExpires { room: "101".into() }
}

fn released(due_at: DateTime<Utc>, at: DateTime<Utc>) -> HoldReleased {
    HoldReleased {
        room: "101".into(),
        due_at,
        at,
    }
}

#[test]
fn a_deadline_fires_at_its_time_and_not_before() {
    TestFixture::<Hold>::new()
        .when(place())
        .then_expect_events([placed()])
        .then_expect_deadline(expires())
        .then_expect_deadline_after(HOLD, expires())
        .then_expect_deadline_at(start() + HOLD, expires())
        .after(HOLD - Duration::from_micros(1))
        .then_expect_no_events()
        .then_expect_deadline(expires())
        .after(Duration::from_micros(1))
        .then_expect_events([released(start() + HOLD, start() + HOLD)])
        .then_expect_no_deadlines()
        .then_expect_state(|hold| assert!(hold.released));
}

#[test]
fn a_deadline_fires_late_at_the_time_the_clock_reached() {
    let late = HOLD + Duration::from_secs(3600);
    TestFixture::<Hold>::new()
        .when(place())
        .after(late)
        .then_expect_events([released(start() + HOLD, start() + late)]);
}

#[test]
fn a_cancelled_deadline_never_fires() {
    TestFixture::<Hold>::new()
        .given([placed().into()])
        .given_deadline(Schedule::after(HOLD, expires()))
        .when(PayHold)
        .then_expect_events([HoldPaid])
        .then_expect_no_deadline::<HoldExpires>()
        .after(HOLD * 10)
        .then_expect_no_events();
}

#[test]
fn cancelling_a_deadline_that_fired_does_nothing() {
    TestFixture::<Hold>::new()
        .when(place())
        .after(HOLD)
        .then_expect_events([released(start() + HOLD, start() + HOLD)])
        .and_when(PayHold)
        .then_expect_events([HoldPaid])
        .then_expect_no_deadlines();
}

#[test]
fn scheduling_a_deadline_again_replaces_it() {
    let until = start() + TimeDelta::minutes(30);
    TestFixture::<Hold>::new()
        .when(place())
        .and_when(ExtendHold { by_minutes: 30 })
        .then_expect_events([HoldExtended { until }])
        .then_expect_deadline_at(until, expires())
        .then_expect_state(|hold| assert_eq!(hold.expires_at, Some(until)))
        .after(HOLD)
        .then_expect_no_events()
        .after(HOLD)
        .then_expect_events([released(until, until)])
        .then_expect_no_deadlines();
}

#[test]
fn a_deadline_already_due_fires_at_once() {
    let earlier = start() - TimeDelta::hours(1);
    TestFixture::<Hold>::new()
        .when(place())
        .and_when(ReleaseAt { at: earlier })
        .then_expect_no_events()
        .then_expect_deadline_at(earlier, expires())
        .after(Duration::ZERO)
        .then_expect_events([released(earlier, start())]);
}

#[test]
fn keyed_deadlines_of_one_type_are_pending_side_by_side_and_fire_in_due_order() {
    let outcome = TestFixture::<Hold>::new()
        .when(place())
        .and_when(RemindGuest {
            minutes_left: vec![1, 10, 5],
        });
    let pending: Vec<(&str, String, DateTime<Utc>)> = outcome
        .pending_deadlines()
        .iter()
        .map(|deadline| {
            (
                deadline.name(),
                deadline.key().to_owned(),
                deadline.due_at(),
            )
        })
        .collect();
    assert_eq!(
        pending,
        [
            ("Reminder", "10".to_owned(), start() + MINUTE * 5),
            ("Reminder", "5".to_owned(), start() + MINUTE * 10),
            ("Reminder", "1".to_owned(), start() + MINUTE * 14),
            ("deadline_test.hold.expires", String::new(), start() + HOLD),
        ]
    );
    assert_eq!(
        outcome.pending_deadlines()[0].value::<Reminder>(),
        Some(Reminder { minutes_left: 10 })
    );
    outcome
        .after(MINUTE * 10)
        .then_expect_events([
            GuestReminded { minutes_left: 10 },
            GuestReminded { minutes_left: 5 },
        ])
        .after(MINUTE * 4)
        .then_expect_events([GuestReminded { minutes_left: 1 }])
        .after(MINUTE)
        .then_expect_events([released(start() + HOLD, start() + HOLD)])
        .then_expect_no_deadlines();
}

#[test]
fn a_deadline_handler_cancels_another_deadline() {
    // Released at 12 minutes: the reminder at 14 never fires.
    TestFixture::<Hold>::new()
        .when(place())
        .and_when(RemindGuest {
            minutes_left: vec![1],
        })
        .and_when(ReleaseAt {
            at: start() + MINUTE * 12,
        })
        .after(MINUTE * 12)
        .then_expect_events([released(start() + MINUTE * 12, start() + MINUTE * 12)])
        .then_expect_no_deadlines()
        .after(HOLD)
        .then_expect_no_events();
}

#[test]
fn a_rejected_command_schedules_and_cancels_nothing() {
    TestFixture::<Hold>::new()
        .given([placed().into(), HoldPaid.into()])
        .given_deadline(Schedule::after(HOLD, expires()))
        .when(PayHold)
        .then_expect_error(HoldError::Paid)
        .then_expect_deadline(expires());
}

#[test]
fn the_fixture_clock_starts_at_a_fixed_time_and_can_be_set() {
    let clock = TestClock::at(start() + TimeDelta::days(3));
    TestFixture::<Hold>::new()
        .with_clock(clock.clone())
        .when(place())
        .then_expect_deadline_at(start() + TimeDelta::days(3) + HOLD, expires());
    let noon: DateTime<Utc> = "2026-06-01T12:00:00Z".parse().unwrap();
    TestFixture::<Hold>::new()
        .at(noon)
        .when(place())
        .then_expect_deadline_at(noon + HOLD, expires());
}

#[test]
fn a_schedule_and_a_cancel_become_deadline_changes_of_any_type() {
    let changes = [
        DeadlineChange::from(Schedule::after(HOLD, expires()).key("a")),
        DeadlineChange::from(Cancel::<Reminder>::new().key("1")),
    ];
    let named: Vec<(&str, &str)> = changes
        .iter()
        .map(|change| (change.name(), change.key()))
        .collect();
    assert_eq!(
        named,
        [("deadline_test.hold.expires", "a"), ("Reminder", "1")]
    );
    let DeadlineChange::Schedule(scheduled) = &changes[0] else {
        panic!("expected a schedule first");
    };
    assert_eq!(scheduled.due(), Due::After(HOLD));
    assert_eq!(scheduled.due().resolve(start()), start() + HOLD);
    assert_eq!(scheduled.value::<HoldExpires>(), Some(&expires()));
    assert_eq!(scheduled.value::<Reminder>(), None);
    assert_eq!(scheduled.encode().unwrap().as_str(), r#"{"room":"101"}"#);
    let decision = Decision::<HoldEvent>::from(vec![HoldEvent::Paid(HoldPaid)]);
    assert!(!decision.is_empty() && decision.deadlines.is_empty());
}

/// An app over `store` whose clock is `clock`.
async fn app_with<S: EventStore>(store: S, clock: &TestClock) -> Cqrs {
    Cqrs::builder(store)
        .clock(clock.clone())
        .without_event_handlers()
        .without_processors()
        .build()
        .unwrap()
}

/// An app fires a due deadline once, through the aggregate's handler,
/// with the deadline consumed in the same append; before its time, and
/// after it fired, there is nothing to fire.
async fn fires_a_due_deadline_once<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let clock = TestClock::at(start());
    let app = app_with(Arc::clone(&store), &clock).await;
    app.execute("h-1", place()).await.unwrap();
    let pending = app.deadlines().pending::<Hold>("h-1").await.unwrap();
    assert_eq!(pending.len(), 1);
    let pending = &pending[0].deadline;
    assert_eq!(pending.name, "deadline_test.hold.expires");
    assert_eq!(pending.due_at, start() + HOLD);
    let deadline_id = pending.deadline_id;

    clock.advance(HOLD - Duration::from_micros(1));
    let early = app.deadlines().fire_due().await.unwrap();
    assert_eq!((early.fired, early.gone, early.failed.len()), (0, 0, 0));

    clock.advance(Duration::from_micros(1));
    let due = app.deadlines().fire_due().await.unwrap();
    assert_eq!(
        (due.fired, due.gone, due.failed.len()),
        (1, 0, 0),
        "{due:?}"
    );
    let hold: Hold = app.load("h-1").await.unwrap();
    assert!(hold.released);
    assert!(
        app.deadlines()
            .pending::<Hold>("h-1")
            .await
            .unwrap()
            .is_empty()
    );

    let events = events_of(&*store, "h-1").await;
    let (last, metadata) = events.last().unwrap();
    assert_eq!(
        *last,
        HoldEvent::Released(released(start() + HOLD, start() + HOLD))
    );
    assert_eq!(metadata.causation_id, Some(deadline_id));
    assert!(metadata.command_id.is_some());

    let again = app.deadlines().fire_due().await.unwrap();
    assert_eq!((again.fired, again.gone), (0, 0));
    assert_eq!(events_of(&*store, "h-1").await.len(), 2);
}

/// A hold's recorded events, with their metadata.
async fn events_of<S: EventStore>(store: &S, id: &str) -> Vec<(HoldEvent, Metadata)> {
    store
        .load("deadline_test.hold", id, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|envelope| {
            let event = HoldEvent::decode(
                &envelope.event_name,
                envelope.event_version,
                &envelope.payload,
            )
            .unwrap();
            (event, envelope.metadata)
        })
        .collect()
}

#[tokio::test]
async fn an_app_fires_a_due_deadline_once_in_memory() {
    fires_a_due_deadline_once(MemoryStore::new()).await;
}

#[tokio::test]
async fn an_app_fires_a_due_deadline_once_on_sqlite() {
    let file = support::TempFile::new("deadlines");
    fires_a_due_deadline_once(SqliteStore::open(file.path()).await.unwrap()).await;
}

#[tokio::test]
async fn an_app_fires_a_due_deadline_once_on_postgres() {
    let store = support::require("CQRS_POSTGRES_URL", |url| async move {
        support::postgres_store(&url, &support::unique_prefix("deadlines"), 4).await
    })
    .await;
    if let Some(store) = store {
        fires_a_due_deadline_once(store).await;
    }
}

#[tokio::test]
async fn an_app_fires_neither_a_cancelled_nor_a_replaced_deadline() {
    let clock = TestClock::at(start());
    let app = app_with(MemoryStore::new(), &clock).await;
    app.execute("paid", place()).await.unwrap();
    app.execute("paid", PayHold).await.unwrap();
    app.execute("extended", place()).await.unwrap();
    app.execute("extended", ExtendHold { by_minutes: 60 })
        .await
        .unwrap();

    clock.advance(HOLD);
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!((fired.fired, fired.gone), (0, 0), "{fired:?}");
    assert!(!app.load::<Hold>("extended").await.unwrap().released);

    clock.advance(Duration::from_secs(3600));
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!(fired.fired, 1, "only the extended hold's new deadline");
    assert!(app.load::<Hold>("extended").await.unwrap().released);
    assert!(!app.load::<Hold>("paid").await.unwrap().released);
}

/// Two instances firing the same due deadlines at once: each takes effect
/// once, the other instance's attempt is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_firing_at_once_release_each_hold_once() {
    let file = support::TempFile::new("deadlines-race");
    let clock = TestClock::at(start());
    let store = SqliteStore::open(file.path()).await.unwrap();
    let first = app_with(store.clone(), &clock).await;
    let second = app_with(SqliteStore::open(file.path()).await.unwrap(), &clock).await;
    for n in 0..40 {
        first.execute(&format!("h-{n}"), place()).await.unwrap();
    }
    clock.advance(HOLD);
    let (a, b) = tokio::join!(first.deadlines().fire_due(), second.deadlines().fire_due());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.fired + b.fired, 40, "{a:?} {b:?}");
    assert!(a.failed.is_empty() && b.failed.is_empty());
    for n in 0..40 {
        let events = events_of(&store, &format!("h-{n}")).await;
        let released = events
            .iter()
            .filter(|(event, _)| matches!(event, HoldEvent::Released(_)))
            .count();
        assert_eq!(released, 1, "hold h-{n}");
    }
}

/// Due deadlines fire earliest first, each on the state the one before
/// it left.
#[tokio::test]
async fn due_deadlines_fire_earliest_first() {
    let store = Arc::new(MemoryStore::new());
    let clock = TestClock::at(start());
    let app = app_with(Arc::clone(&store), &clock).await;
    app.execute("h-1", place()).await.unwrap();
    app.execute(
        "h-1",
        RemindGuest {
            minutes_left: vec![5],
        },
    )
    .await
    .unwrap();
    clock.advance(HOLD);
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!(fired.fired, 2, "the reminder, then the expiry: {fired:?}");
    let events = events_of(&*store, "h-1").await;
    let names: Vec<&str> = events
        .iter()
        .map(|(event, _)| match event {
            HoldEvent::Placed(_) => "placed",
            HoldEvent::Reminded(_) => "reminded",
            HoldEvent::Released(_) => "released",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["placed", "reminded", "released"], "earliest first");
}

/// A deadline whose handler fails is tried again after the retry
/// policy's growing pauses, then parked until an operator retries it; the
/// others fire meanwhile.
#[tokio::test]
async fn a_deadline_whose_handler_keeps_failing_is_retried_then_parked() {
    let clock = TestClock::at(start());
    let app = app_with(MemoryStore::new(), &clock).await;
    app.execute("h-1", place()).await.unwrap();
    app.execute(
        "h-1",
        RemindGuest {
            minutes_left: vec![0],
        },
    )
    .await
    .unwrap();
    clock.advance(HOLD);
    let first = app.deadlines().fire_due().await.unwrap();
    assert_eq!(first.fired, 1, "the expiry: {first:?}");
    assert_eq!(first.failed.len(), 1);
    assert_eq!(first.failed[0].deadline.deadline.name, "Reminder");
    assert!(first.failed[0].error.contains("no time left"), "{first:?}");
    // The default policy: 5 attempts, pauses from 100 ms doubling.
    let pause = Duration::from_millis(100);
    assert_eq!(
        first.failed[0].retry_at,
        Some(start() + HOLD + TimeDelta::from_std(pause).unwrap())
    );
    let pending = app.deadlines().pending::<Hold>("h-1").await.unwrap();
    assert_eq!((pending[0].attempts, pending[0].parked), (1, false));
    assert!(
        pending[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no time left")
    );

    let early = app.deadlines().fire_due().await.unwrap();
    assert!(early.failed.is_empty(), "not before its pause: {early:?}");
    for attempt in 2..=5u32 {
        clock.advance(pause * 2u32.pow(attempt - 2));
        let again = app.deadlines().fire_due().await.unwrap();
        assert_eq!(again.failed.len(), 1, "attempt {attempt}");
        assert_eq!(again.failed[0].retry_at.is_none(), attempt == 5);
    }
    let pending = app.deadlines().pending::<Hold>("h-1").await.unwrap();
    assert_eq!((pending[0].attempts, pending[0].parked), (5, true));
    clock.advance(Duration::from_secs(3600));
    let parked = app.deadlines().fire_due().await.unwrap();
    assert!(parked.failed.is_empty(), "a parked deadline is not fired");

    let id = pending[0].deadline.deadline_id;
    assert!(app.deadlines().retry::<Hold>("h-1", id).await.unwrap());
    let retried = app.deadlines().fire_due().await.unwrap();
    assert_eq!(retried.failed.len(), 1, "fired again, and failing again");
    let pending = app.deadlines().pending::<Hold>("h-1").await.unwrap();
    assert_eq!((pending[0].attempts, pending[0].parked), (1, false));
    assert!(
        !app.deadlines()
            .retry::<Hold>("h-1", Uuid::now_v7())
            .await
            .unwrap()
    );
}

/// An app running its processors fires a deadline when it falls due, woken
/// at its time rather than by the poll interval (set long here), and its
/// status shows the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processors_fire_a_deadline_when_it_falls_due() {
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .processors(|_| false)
        .poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    assert!(app.processors().names().contains(&"cqrs.deadlines"));
    let quiet = Cqrs::builder(MemoryStore::new())
        .without_processors()
        .build()
        .unwrap();
    assert!(
        !quiet.processors().names().contains(&"cqrs.deadlines"),
        "an app without processors fires deadlines only when told"
    );
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    app.execute("h-1", place()).await.unwrap();
    let due_at = Utc::now() + TimeDelta::milliseconds(300);
    app.execute("h-1", ReleaseAt { at: due_at }).await.unwrap();

    let released = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let hold: Hold = app.load("h-1").await.unwrap();
            if hold.released {
                return Utc::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("released within 10 s");
    assert!(released >= due_at, "not before its time");
    let lag = released - due_at;
    assert!(
        lag < TimeDelta::seconds(2),
        "woken at its due time, not by the 30 s poll: {lag}"
    );
    let status = app.processors().status();
    let runner = status
        .iter()
        .find(|status| status.name == "cqrs.deadlines")
        .expect("the runner is one of the processors");
    assert_eq!(runner.kind, cqrs_core::processor::ProcessorKind::Deadlines);
    assert!(runner.failure.is_none(), "{runner:?}");
    shutdown.now().await;
    task.await.unwrap().unwrap();
}

/// Two nodes running their processors on one store share the deadlines
/// by segment, and each deadline takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_running_processors_fire_each_deadline_once() {
    let file = support::TempFile::new("deadlines-nodes");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let node = |name: &'static str| {
        let store = store.clone();
        async move {
            Cqrs::builder(store)
                .without_event_handlers()
                .processors(|_| false)
                .node_id(name)
                .poll_interval(Duration::from_millis(100))
                .build()
                .unwrap()
        }
    };
    let (first, second) = (node("node-a").await, node("node-b").await);
    let due_at = Utc::now() + TimeDelta::milliseconds(500);
    for n in 0..30 {
        let id = format!("h-{n}");
        first.execute(&id, place()).await.unwrap();
        first.execute(&id, ReleaseAt { at: due_at }).await.unwrap();
    }
    let runs: Vec<_> = [&first, &second]
        .into_iter()
        .map(|app| {
            let running = app.processors().run();
            let shutdown = running.shutdown();
            (shutdown, tokio::spawn(running))
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut released = 0;
            for n in 0..30 {
                if first
                    .load::<Hold>(&format!("h-{n}"))
                    .await
                    .unwrap()
                    .released
                {
                    released += 1;
                }
            }
            if released == 30 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every hold released within 20 s");
    for n in 0..30 {
        let events = events_of(&store, &format!("h-{n}")).await;
        let released = events
            .iter()
            .filter(|(event, _)| matches!(event, HoldEvent::Released(_)))
            .count();
        assert_eq!(released, 1, "hold h-{n}");
    }
    for (shutdown, task) in runs {
        shutdown.now().await;
        task.await.unwrap().unwrap();
    }
}
