//! Deadlines a process manager schedules and cancels for its instances,
//! fired through its `#[deadline]` handlers: in the fixture with a clock
//! the test moves, and in an app on every store, where a deadline fires
//! once, never before its time, and never after it was cancelled.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_core::prelude::*;
use cqrs_core::testing::ProcessFixture;
use cqrs_core::{SqliteStore, TestClock};
use serde::{Deserialize, Serialize};

const HOLD: Duration = Duration::from_secs(15 * 60);

/// The bookings whose payment deadline's handler ran, once per run.
static FIRES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestBooking {
    pub room: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtendBooking {
    pub minutes: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmBooking;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpireBooking {
    pub due_at: DateTime<Utc>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveBooking;

#[derive(Debug, Clone, Command)]
pub enum BookingCommand {
    Request(RequestBooking),
    Extend(ExtendBooking),
    Confirm(ConfirmBooking),
    Expire(ExpireBooking),
    Archive(ArchiveBooking),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingRequested {
    pub room: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingExtended {
    pub until: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingConfirmed;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingExpired {
    pub due_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingArchived;

#[derive(Debug, Clone, PartialEq, Event)]
pub enum BookingEvent {
    Requested(BookingRequested),
    Extended(BookingExtended),
    Confirmed(BookingConfirmed),
    Expired(BookingExpired),
    Archived(BookingArchived),
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the booking is closed")]
pub struct BookingClosed;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "pm_deadline_test.booking", command = BookingCommand, event = BookingEvent, error = BookingClosed)]
pub struct Booking {
    confirmed: bool,
    expired: bool,
    archived: bool,
}

#[aggregate_impl]
impl Booking {
    #[command_handler(create)]
    fn request(&self, command: RequestBooking) -> Result<BookingRequested, BookingClosed> {
        Ok(BookingRequested { room: command.room })
    }

    #[command_handler]
    fn extend(
        &self,
        command: ExtendBooking,
        context: &CommandContext,
    ) -> Result<BookingExtended, BookingClosed> {
        if self.confirmed || self.expired {
            return Err(BookingClosed);
        }
        let until = context.now() + chrono::TimeDelta::minutes(command.minutes.into());
        Ok(BookingExtended { until })
    }

    #[command_handler]
    fn confirm(&self, _: ConfirmBooking) -> Result<Option<BookingConfirmed>, BookingClosed> {
        if self.expired {
            return Err(BookingClosed);
        }
        Ok((!self.confirmed).then_some(BookingConfirmed))
    }

    #[command_handler]
    fn expire(
        &self,
        command: ExpireBooking,
        context: &CommandContext,
    ) -> Result<Option<BookingExpired>, BookingClosed> {
        Ok((!self.confirmed && !self.expired).then(|| BookingExpired {
            due_at: command.due_at,
            at: context.now(),
        }))
    }

    #[command_handler]
    fn archive(&self, _: ArchiveBooking) -> Result<Option<BookingArchived>, BookingClosed> {
        Ok((!self.archived).then_some(BookingArchived))
    }

    #[apply]
    fn requested(&mut self, _: &BookingRequested) {}

    #[apply]
    fn extended(&mut self, _: &BookingExtended) {}

    #[apply]
    fn confirmed(&mut self, _: &BookingConfirmed) {
        self.confirmed = true;
    }

    #[apply]
    fn expired(&mut self, _: &BookingExpired) {
        self.expired = true;
    }

    #[apply]
    fn archived(&mut self, _: &BookingArchived) {
        self.archived = true;
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pay {
    pub booking_id: String,
}

#[derive(Debug, Clone, Command)]
pub enum PaymentCommand {
    Pay(Pay),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub booking_id: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum PaymentEvent {
    Received(PaymentReceived),
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "pm_deadline_test.payment", command = PaymentCommand, event = PaymentEvent, error = BookingClosed)]
pub struct Payment;

#[aggregate_impl]
impl Payment {
    #[command_handler(create)]
    fn pay(&self, command: Pay) -> Result<PaymentReceived, BookingClosed> {
        Ok(PaymentReceived {
            booking_id: command.booking_id,
        })
    }

    #[apply]
    fn received(&mut self, _: &PaymentReceived) {}
}

/// A booking not paid within its hold expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
#[deadline_type(name = "pm_deadline_test.payment_due")]
pub struct PaymentDue {
    pub booking_id: String,
}

/// An expired booking is archived a day later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
pub struct Archive {
    pub booking_id: String,
}

/// The timeouts of bookings, one instance per booking: the payment's
/// (cancelled by a payment, an event of another stream) and the archive's
/// that follows an expiry.
#[derive(Debug, Default)]
pub struct Timeouts;

#[process_manager(name = "pm_deadline_test.timeouts", segments = 2)]
impl Timeouts {
    #[event_handler]
    fn requested(&self, _: &BookingRequested, envelope: &Envelope) -> Schedule<PaymentDue> {
        let booking_id = envelope.aggregate_id.clone();
        Schedule::after(HOLD, PaymentDue { booking_id })
    }

    /// Scheduling it again replaces the pending one.
    #[event_handler]
    fn extended(&self, event: &BookingExtended, envelope: &Envelope) -> Schedule<PaymentDue> {
        let booking_id = envelope.aggregate_id.clone();
        Schedule::at(event.until, PaymentDue { booking_id })
    }

    #[event_handler]
    async fn paid(
        &self,
        event: &PaymentReceived,
        context: &ProcessContext<'_>,
    ) -> Result<Cancel<PaymentDue>, HandlerError> {
        let confirmed = context.execute(&event.booking_id, ConfirmBooking).await;
        // Paid after it expired: the booking stays expired (a refund is
        // the business's answer).
        if let Err(error) = confirmed
            && !matches!(error, CommandError::Domain(BookingClosed))
        {
            return Err(error.into());
        }
        Ok(Cancel::new().for_instance(event.booking_id.clone()))
    }

    #[deadline]
    async fn payment_due(
        &self,
        deadline: PaymentDue,
        context: &ProcessContext<'_>,
        due: &DeadlineContext<'_>,
    ) -> Result<Option<Schedule<Archive>>, HandlerError> {
        assert!(due.now() >= due.due_at, "fired before its time");
        assert_eq!(due.aggregate_id, deadline.booking_id);
        FIRES.lock().unwrap().push(deadline.booking_id.clone());
        let expired = context
            .execute(&deadline.booking_id, ExpireBooking { due_at: due.due_at })
            .await?;
        let booking_id = deadline.booking_id;
        Ok((!expired.events.is_empty()).then(|| Schedule::after(DAY, Archive { booking_id })))
    }

    #[deadline]
    async fn archive(
        &self,
        deadline: Archive,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        context
            .execute(&deadline.booking_id, ArchiveBooking)
            .await?;
        Ok(())
    }
}

fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn requested() -> BookingRequested {
    BookingRequested {
        room: "101".to_owned(),
    }
}

fn due(booking_id: &str) -> PaymentDue {
    PaymentDue {
        booking_id: booking_id.to_owned(),
    }
}

#[test]
fn a_request_schedules_its_payment_deadline_and_it_fires_at_its_time() {
    ProcessFixture::<Timeouts>::new()
        .when::<Booking>("b-1", requested())
        .then_expect_no_commands()
        .then_expect_deadline_after("b-1", HOLD, due("b-1"))
        .after(HOLD - Duration::from_micros(1))
        .then_expect_no_commands()
        .after(Duration::from_micros(1))
        .then_expect_command(
            "b-1",
            ExpireBooking {
                due_at: start() + HOLD,
            },
        )
        .then_expect_no_deadline::<PaymentDue>("b-1")
        .then_expect_deadline_after(
            "b-1",
            DAY,
            Archive {
                booking_id: "b-1".to_owned(),
            },
        )
        .after(DAY)
        .then_expect_command("b-1", ArchiveBooking)
        .then_expect_no_deadlines();
}

#[test]
fn a_payment_on_another_stream_cancels_the_instance_deadline() {
    ProcessFixture::<Timeouts>::new()
        .given::<Booking>("b-1", [requested()])
        .when::<Booking>("b-1", requested())
        .and_when::<Payment>(
            "p-1",
            PaymentReceived {
                booking_id: "b-1".to_owned(),
            },
        )
        .then_expect_command("b-1", ConfirmBooking)
        .then_expect_no_deadlines()
        .after(HOLD * 2)
        .then_expect_no_commands();
}

#[test]
fn an_extension_reschedules_and_only_the_new_time_fires() {
    let until = start() + HOLD * 3;
    ProcessFixture::<Timeouts>::new()
        .given::<Booking>("b-1", [requested()])
        .when::<Booking>("b-1", requested())
        .and_when::<Booking>("b-1", BookingExtended { until })
        .then_expect_deadline_at("b-1", until, due("b-1"))
        .after(HOLD)
        .then_expect_no_commands()
        .after(HOLD * 2)
        .then_expect_command("b-1", ExpireBooking { due_at: until });
}

#[test]
fn a_payment_after_the_deadline_fired_cancels_nothing_and_fails_nothing() {
    ProcessFixture::<Timeouts>::new()
        .given::<Booking>("b-1", [requested()])
        .when::<Booking>("b-1", requested())
        .after(HOLD)
        .then_expect_command(
            "b-1",
            ExpireBooking {
                due_at: start() + HOLD,
            },
        )
        .and_when::<Payment>(
            "p-1",
            PaymentReceived {
                booking_id: "b-1".to_owned(),
            },
        )
        .then_expect_command("b-1", ConfirmBooking)
        // The archive the fire scheduled is another deadline: it stays.
        .then_expect_no_deadline::<PaymentDue>("b-1")
        .then_expect_deadline(
            "b-1",
            Archive {
                booking_id: "b-1".to_owned(),
            },
        );
}

#[test]
fn an_event_handled_twice_schedules_one_deadline_and_revives_none() {
    let outcome = ProcessFixture::<Timeouts>::new()
        .when::<Booking>("b-1", requested())
        .redelivered();
    let pending = outcome.pending_deadlines();
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(
        (
            pending[0].aggregate_type.as_str(),
            pending[0].aggregate_id.as_str()
        ),
        ("pm_deadline_test.timeouts", "b-1")
    );
    let first = pending[0].deadline.deadline_id;
    let outcome = outcome.redelivered();
    assert_eq!(outcome.pending_deadlines()[0].deadline.deadline_id, first);

    // Handled again after its deadline fired: not scheduled again.
    outcome
        .after(HOLD)
        .then_expect_command(
            "b-1",
            ExpireBooking {
                due_at: start() + HOLD,
            },
        )
        .redelivered()
        .then_expect_no_deadline::<PaymentDue>("b-1");
}

/// An app over `store` running the timeouts, its clock `clock`.
fn app_with<S: EventStore>(store: S, clock: &TestClock) -> Cqrs {
    Cqrs::builder(store).clock(clock.clone()).build().unwrap()
}

/// A booking's recorded events.
async fn events_of(app: &Cqrs, store: &impl EventStore, id: &str) -> Vec<BookingEvent> {
    let _ = app;
    store
        .load("pm_deadline_test.booking", id, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|envelope| {
            BookingEvent::decode(
                &envelope.event_name,
                envelope.event_version,
                &envelope.payload,
            )
            .unwrap()
        })
        .collect()
}

/// In an app: expired once at its time, paid (from another stream) never,
/// extended at its new time only, and archived a day after it expired;
/// each deadline fires once however often the due ones are fired.
async fn an_app_fires_process_deadlines_once<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let clock = TestClock::at(start());
    let app = app_with(Arc::clone(&store), &clock);
    for id in ["expires", "paid", "extended"] {
        app.execute(
            id,
            RequestBooking {
                room: id.to_owned(),
            },
        )
        .await
        .unwrap();
    }
    app.processors().catch_up().await.unwrap();
    app.execute(
        "p-1",
        Pay {
            booking_id: "paid".to_owned(),
        },
    )
    .await
    .unwrap();
    app.execute("extended", ExtendBooking { minutes: 60 })
        .await
        .unwrap();
    app.processors().catch_up().await.unwrap();
    let pending = |id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .load_deadlines("pm_deadline_test.timeouts", id)
                .await
                .unwrap()
        }
    };
    assert_eq!(pending("expires").await.len(), 1);
    assert!(pending("paid").await.is_empty());
    assert_eq!(
        pending("extended").await[0].deadline.due_at,
        start() + Duration::from_secs(3600)
    );

    clock.advance(HOLD - Duration::from_micros(1));
    assert_eq!(app.deadlines().fire_due().await.unwrap().fired, 0);
    clock.advance(Duration::from_micros(1));
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!((fired.fired, fired.failed.len()), (1, 0), "{fired:?}");
    assert_eq!(app.deadlines().fire_due().await.unwrap().fired, 0);
    let expired = events_of(&app, &*store, "expires").await;
    assert_eq!(
        expired,
        [
            BookingEvent::Requested(BookingRequested {
                room: "expires".to_owned()
            }),
            BookingEvent::Expired(BookingExpired {
                due_at: start() + HOLD,
                at: start() + HOLD,
            }),
        ]
    );

    clock.advance(Duration::from_secs(3600));
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!((fired.fired, fired.failed.len()), (1, 0), "{fired:?}");
    assert!(matches!(
        events_of(&app, &*store, "extended").await.last(),
        Some(BookingEvent::Expired(BookingExpired { due_at, .. })) if *due_at == start() + Duration::from_secs(3600)
    ));
    assert_eq!(
        events_of(&app, &*store, "paid").await.last(),
        Some(&BookingEvent::Confirmed(BookingConfirmed))
    );
    clock.advance(DAY);
    let fired = app.deadlines().fire_due().await.unwrap();
    assert_eq!(fired.fired, 2, "the two archives: {fired:?}");
    for id in ["expires", "extended"] {
        let events = events_of(&app, &*store, id).await;
        let expiries = events
            .iter()
            .filter(|event| matches!(event, BookingEvent::Expired(_)))
            .count();
        assert_eq!(expiries, 1, "{id}: {events:?}");
        assert_eq!(
            events.last(),
            Some(&BookingEvent::Archived(BookingArchived))
        );
    }
    assert!(pending("expires").await.is_empty());
    assert!(pending("extended").await.is_empty());
}

#[tokio::test]
async fn an_app_fires_process_deadlines_once_in_memory() {
    an_app_fires_process_deadlines_once(MemoryStore::new()).await;
}

#[tokio::test]
async fn an_app_fires_process_deadlines_once_on_sqlite() {
    let file = support::TempFile::new("process-deadlines");
    an_app_fires_process_deadlines_once(SqliteStore::open(file.path()).await.unwrap()).await;
}

#[tokio::test]
async fn an_app_fires_process_deadlines_once_on_postgres() {
    let store = support::require("CQRS_POSTGRES_URL", |url| async move {
        support::postgres_store(&url, &support::unique_prefix("pm_deadlines"), 4).await
    })
    .await;
    if let Some(store) = store {
        an_app_fires_process_deadlines_once(store).await;
    }
}

/// Payments racing the fires of their bookings' deadlines, fired by two
/// callers at once beside the processors: each deadline ends once, fired
/// or cancelled, each booking ends confirmed or expired, and none is
/// left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_racing_fires_end_each_deadline_once() {
    let store = Arc::new(MemoryStore::new());
    let clock = TestClock::at(start());
    let app = app_with(Arc::clone(&store), &clock);
    let ids: Vec<String> = (0..200).map(|n| format!("race-{n}")).collect();
    for id in &ids {
        app.execute(id, RequestBooking { room: id.clone() })
            .await
            .unwrap();
    }
    app.processors().catch_up().await.unwrap();
    clock.advance(HOLD);
    for id in &ids {
        let booking_id = id.clone();
        app.execute(format!("pay-{id}").as_str(), Pay { booking_id })
            .await
            .unwrap();
    }
    let (caught_up, first, second) = tokio::join!(
        app.processors().catch_up(),
        app.deadlines().fire_due(),
        app.deadlines().fire_due()
    );
    caught_up.unwrap();
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        first.failed.is_empty() && second.failed.is_empty(),
        "{first:?} {second:?}"
    );
    app.deadlines().fire_due().await.unwrap();
    let fires = FIRES.lock().unwrap().clone();
    for id in &ids {
        let booking: Booking = app.load(id).await.unwrap();
        assert!(booking.confirmed != booking.expired, "{id}: {booking:?}");
        let fired = fires.iter().filter(|fired| *fired == id).count();
        assert!(fired <= 1, "{id} fired {fired} times");
        assert!(
            store
                .load_deadlines("pm_deadline_test.timeouts", id)
                .await
                .unwrap()
                .is_empty(),
            "{id} is still pending"
        );
    }
}
