//! [`TestFixture`]: given events, when a command, then expect events, an error
//! or a state; [`DecisionFixture`] the same for a decision over a
//! consistency boundary, given events of any stream; and [`ProcessFixture`]
//! for a process manager: given events, when an event, then expect the
//! commands it sends and the deadlines it schedules.

mod decision;
mod process;

pub use decision::{DecisionFixture, DecisionOutcome};
pub use process::{ProcessFixture, ProcessOutcome};

use std::any::Any;
use std::fmt::{self, Debug, Write as _};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aggregate::{Aggregate, CommandContext, Decision, Event, IntoCommand};
use crate::app::decode;
use crate::clock::{Clock, TestClock};
use crate::deadline::{Deadline, DeadlineChange, DeadlineContext, Due, Schedule};
use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::error::CommandError;
use crate::registry::DeadlineRegistration;
use crate::routing::IntoEvent;

/// Tests one aggregate's decisions without a store: given past events, when a
/// command, then expect the recorded events, an error, or a state.
///
/// Every event a handler decides on goes through serialization and back, as it
/// would through a store, so a payload that does not round-trip fails the test.
/// Failures panic with a line diff of expected against actual.
///
/// # Examples
///
/// ```
/// # use cqrs_core::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Add { pub amount: u32 }
/// # #[derive(Debug, Clone, Command)]
/// # pub enum TallyCommand { Add(Add) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct Added { pub amount: u32, pub total: u32 }
/// # #[derive(Debug, Clone, PartialEq, Event)]
/// # pub enum TallyEvent { Added(Added) }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("overflow")]
/// # pub struct Overflow;
/// #[derive(Debug, Default, Aggregate)]
/// #[aggregate(name = "tally", command = TallyCommand, event = TallyEvent, error = Overflow)]
/// pub struct Tally { total: u32 }
///
/// #[aggregate_impl]
/// impl Tally {
///     #[command_handler(create)]
///     fn add(&self, command: Add) -> Result<Added, Overflow> {
///         let total = self.total.checked_add(command.amount).ok_or(Overflow)?;
///         Ok(Added { amount: command.amount, total })
///     }
///
///     #[apply]
///     fn added(&mut self, event: &Added) {
///         self.total = event.total;
///     }
/// }
///
/// TestFixture::<Tally>::new()
///     .given_no_events()
///     .when(Add { amount: 2 })
///     .then_expect_events([Added { amount: 2, total: 2 }])
///     .then_expect_state(|tally| assert_eq!(tally.total, 2));
/// ```
pub struct TestFixture<A: Aggregate> {
    aggregate_id: String,
    history: Vec<A::Event>,
    services: Option<A::Services>,
    metadata: Metadata,
    clock: TestClock,
    deadlines: Vec<PendingDeadline>,
}

/// The time a fixture's clock starts at: the same in every run, so a test
/// that reads it is repeatable.
fn start_of_test() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or(DateTime::<Utc>::MIN_UTC) // 2026-01-01T00:00:00Z
}

impl<A: Aggregate> TestFixture<A> {
    /// A fixture for aggregate `test-aggregate` with no history, its clock
    /// at 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self {
            aggregate_id: "test-aggregate".to_owned(),
            history: Vec::new(),
            services: None,
            metadata: Metadata::default(),
            clock: TestClock::at(start_of_test()),
            deadlines: Vec::new(),
        }
    }

    /// The id the command handler sees in its context.
    pub fn with_aggregate_id(mut self, aggregate_id: impl Into<String>) -> Self {
        self.aggregate_id = aggregate_id.into();
        self
    }

    /// The services the command handler receives.
    pub fn with_services(mut self, services: A::Services) -> Self {
        self.services = Some(services);
        self
    }

    /// The metadata the command is sent with.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The clock handlers read through [`CommandContext::now`] and
    /// [`DeadlineContext::now`]: a clone of a [`TestClock`] the test also
    /// moves. [`TestOutcome::after`] moves it too.
    pub fn with_clock(mut self, clock: TestClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the fixture's clock to `time` (2026-01-01T00:00:00Z unless set).
    pub fn at(self, time: DateTime<Utc>) -> Self {
        self.clock.set(time);
        self
    }

    /// The events recorded before the command, oldest first.
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        self.history.extend(events);
        self
    }

    /// The aggregate does not exist yet.
    pub fn given_no_events(mut self) -> Self {
        self.history.clear();
        self
    }

    /// A deadline the aggregate scheduled before the command, pending; a
    /// `Schedule::after` counts from the fixture's clock.
    ///
    /// # Panics
    ///
    /// If the deadline does not serialize.
    #[track_caller]
    pub fn given_deadline<T: Deadline>(mut self, deadline: Schedule<T>) -> Self {
        let now = self.clock.now();
        let change = DeadlineChange::from(deadline);
        if let Err(error) = schedule(&mut self.deadlines, change, now) {
            panic!("the given deadline does not serialize: {error}");
        }
        self
    }

    /// Runs `command` on the aggregate rebuilt from the given events, under the
    /// same rules as `Cqrs::execute` (create and existing commands included).
    ///
    /// An `async` handler is driven to completion on the calling thread.
    pub fn when(self, command: impl IntoCommand<Aggregate = A>) -> TestOutcome<A> {
        let mut state = A::initial();
        for event in &self.history {
            state.apply(event);
        }
        let services = match self.services {
            Some(services) => services,
            None => match (Box::new(()) as Box<dyn Any>).downcast::<A::Services>() {
                Ok(unit) => *unit,
                Err(_) => panic!(
                    "aggregate {} declares services; pass them to TestFixture::with_services",
                    A::NAME
                ),
            },
        };
        let timeline = Timeline {
            aggregate_id: self.aggregate_id,
            version: self.history.len() as u64,
            state,
            services,
            metadata: self.metadata,
            clock: self.clock,
            deadlines: self.deadlines,
        };
        timeline.when(command.into_command())
    }
}

impl<A: Aggregate> Default for TestFixture<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> Debug for TestFixture<A>
where
    A::Event: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestFixture")
            .field("aggregate", &A::NAME)
            .field("aggregate_id", &self.aggregate_id)
            .field("history", &self.history)
            .field("now", &self.clock.now())
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

/// A deadline pending in a [`TestFixture`], as a store would keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDeadline {
    name: &'static str,
    key: String,
    due_at: DateTime<Utc>,
    value: JsonPayload,
}

impl PendingDeadline {
    /// The deadline type's stored name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The key it was scheduled with (empty by default).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// When it falls due.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.due_at
    }

    /// Its value, if it reads as a `T`.
    pub fn value<T: Deadline>(&self) -> Option<T> {
        (self.name == T::NAME)
            .then(|| self.value.decode().ok())
            .flatten()
    }
}

/// Applies one deadline change to the pending set, as a store would.
fn schedule(
    pending: &mut Vec<PendingDeadline>,
    change: DeadlineChange,
    now: DateTime<Utc>,
) -> Result<(), serde_json::Error> {
    let (name, key) = (change.name(), change.key().to_owned());
    let new = match change {
        DeadlineChange::Schedule(deadline) => Some(PendingDeadline {
            name,
            due_at: deadline.due().resolve(now),
            value: deadline.encode()?,
            key: key.clone(),
        }),
        DeadlineChange::Cancel { .. } => None,
    };
    pending.retain(|deadline| deadline.name != name || deadline.key != key);
    pending.extend(new);
    Ok(())
}

/// The aggregate as a fixture moves it along: its state, pending deadlines
/// and clock after each step.
struct Timeline<A: Aggregate> {
    aggregate_id: String,
    version: u64,
    state: A,
    services: A::Services,
    metadata: Metadata,
    clock: TestClock,
    deadlines: Vec<PendingDeadline>,
}

impl<A: Aggregate> Timeline<A> {
    fn when(mut self, command: A::Command) -> TestOutcome<A> {
        let context = CommandContext {
            aggregate_id: &self.aggregate_id,
            version: self.version,
            metadata: &self.metadata,
            clock: &self.clock,
        };
        let decision = block_on(self.state.handle(command, &context, &self.services));
        let result = decision.and_then(|decision| self.record(decision));
        TestOutcome {
            timeline: self,
            result,
        }
    }

    /// Fires each pending deadline that is due, earliest first, each
    /// against the state the ones before it left.
    fn fire_due(&mut self) -> Result<Vec<A::Event>, CommandError<A::Error>> {
        let mut fired = Vec::new();
        loop {
            let now = self.clock.now();
            let due = self
                .deadlines
                .iter()
                .enumerate()
                .filter(|(_, deadline)| deadline.due_at <= now)
                .min_by_key(|(_, deadline)| deadline.due_at)
                .map(|(index, _)| index);
            let Some(index) = due else {
                return Ok(fired);
            };
            let deadline = self.deadlines.remove(index);
            let Some((_, handler)) = DeadlineRegistration::find::<A>(deadline.name) else {
                panic!(
                    "aggregate {} has no #[deadline] handler for `{}`",
                    A::NAME,
                    deadline.name
                );
            };
            let context = DeadlineContext {
                aggregate_id: &self.aggregate_id,
                version: self.version,
                key: &deadline.key,
                due_at: deadline.due_at,
                metadata: &self.metadata,
                clock: &self.clock,
            };
            let decision = block_on((handler.decide)(
                &self.state,
                &deadline.value,
                &context,
                &self.services,
            ))?;
            fired.extend(self.record(decision)?);
        }
    }

    /// Records a decision: its events, round-tripped as a store would give
    /// them back, applied to the state; its deadline changes, to the
    /// pending set. A decision that fails to encode records nothing.
    fn record(
        &mut self,
        decision: Decision<A::Event>,
    ) -> Result<Vec<A::Event>, CommandError<A::Error>> {
        let events = decision
            .events
            .iter()
            .zip(self.version + 1..)
            .map(|(event, sequence)| round_trip::<A>(&self.aggregate_id, sequence, event))
            .collect::<Result<Vec<_>, _>>()?;
        let now = self.clock.now();
        let mut deadlines = self.deadlines.clone();
        for change in decision.deadlines {
            let name = change.name();
            if change.instance().is_some() {
                return Err(CommandError::DeadlineInstance { name });
            }
            schedule(&mut deadlines, change, now)
                .map_err(|source| CommandError::EncodeDeadline { name, source })?;
        }
        self.deadlines = deadlines;
        for event in &events {
            self.state.apply(event);
        }
        self.version += events.len() as u64;
        Ok(events)
    }
}

/// The event as a store would give it back.
fn round_trip<A: Aggregate>(
    aggregate_id: &str,
    sequence: u64,
    event: &A::Event,
) -> Result<A::Event, CommandError<A::Error>> {
    let event_type = event.event_type();
    let payload = event.encode().map_err(|source| CommandError::Encode {
        event_name: event_type.name,
        source,
    })?;
    let envelope = Envelope {
        event_id: Uuid::now_v7(),
        aggregate_type: A::NAME.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        position: sequence,
        event_name: event_type.name.to_owned(),
        event_version: event_type.version,
        recorded_at: Utc::now(),
        metadata: Metadata::default(),
        payload,
    };
    decode(&envelope).map_err(CommandError::Decode)
}

/// What a [`TestFixture`] step came to (a command, or the deadlines that
/// fell due), with the `then_*` assertions, and [`after`](Self::after) and
/// [`and_when`](Self::and_when) to go on from there.
pub struct TestOutcome<A: Aggregate> {
    timeline: Timeline<A>,
    result: Result<Vec<A::Event>, CommandError<A::Error>>,
}

impl<A: Aggregate> TestOutcome<A> {
    /// The recorded events, or the error.
    pub fn result(&self) -> &Result<Vec<A::Event>, CommandError<A::Error>> {
        &self.result
    }

    /// The state after the recorded events (the given state if the command failed).
    pub fn state(&self) -> &A {
        &self.timeline.state
    }

    /// The deadlines pending after this step, earliest first.
    pub fn pending_deadlines(&self) -> Vec<PendingDeadline> {
        let mut pending = self.timeline.deadlines.clone();
        pending.sort_by_key(|deadline| deadline.due_at);
        pending
    }

    /// Moves the clock forward by `by` and fires every pending deadline due
    /// by then, earliest first, each through its `#[deadline]` handler
    /// against the state the ones before it left. The outcome holds the
    /// events they recorded (none if nothing was due), or the first error.
    pub fn after(mut self, by: Duration) -> Self {
        self.timeline.clock.advance(by);
        self.result = self.timeline.fire_due();
        self
    }

    /// Runs another command against the state after this step.
    pub fn and_when(self, command: impl IntoCommand<Aggregate = A>) -> Self {
        self.timeline.when(command.into_command())
    }

    /// Asserts the command succeeded with exactly these events, in order.
    #[track_caller]
    pub fn then_expect_events<T>(self, expected: impl IntoIterator<Item = T>) -> Self
    where
        T: IntoEvent<A::Event>,
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().map(IntoEvent::into_event).collect();
        match &self.result {
            Ok(events) if *events == expected => {}
            Ok(events) => panic!(
                "the command recorded other events than expected\n{}",
                diff(&expected, events)
            ),
            Err(error) => {
                panic!("expected events {expected:#?}\nbut the command failed: {error}\n{error:#?}")
            }
        }
        self
    }

    /// Asserts the command succeeded and recorded no events.
    #[track_caller]
    pub fn then_expect_no_events(self) -> Self
    where
        A::Event: PartialEq + Debug,
    {
        self.then_expect_events(Vec::<A::Event>::new())
    }

    /// Asserts a deadline equal to `expected` is pending (due at any time).
    #[track_caller]
    pub fn then_expect_deadline<T>(self, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        self.expect_deadline(&expected, None)
    }

    /// Asserts a deadline equal to `expected` is pending, due exactly `at`.
    #[track_caller]
    pub fn then_expect_deadline_at<T>(self, at: DateTime<Utc>, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        self.expect_deadline(&expected, Some(at))
    }

    /// Asserts a deadline equal to `expected` is pending, due exactly `by`
    /// after the clock's time now.
    #[track_caller]
    pub fn then_expect_deadline_after<T>(self, by: Duration, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        let at = Due::After(by).resolve(self.timeline.clock.now());
        self.expect_deadline(&expected, Some(at))
    }

    /// Asserts no deadline of type `T` is pending: never scheduled,
    /// cancelled, or fired.
    #[track_caller]
    pub fn then_expect_no_deadline<T: Deadline>(self) -> Self {
        let pending: Vec<&PendingDeadline> = self
            .timeline
            .deadlines
            .iter()
            .filter(|deadline| deadline.name == T::NAME)
            .collect();
        assert!(
            pending.is_empty(),
            "expected no pending `{}` deadline, but found {pending:#?}",
            T::NAME
        );
        self
    }

    /// Asserts no deadline is pending.
    #[track_caller]
    pub fn then_expect_no_deadlines(self) -> Self {
        assert!(
            self.timeline.deadlines.is_empty(),
            "expected no pending deadlines, but found {:#?}",
            self.pending_deadlines()
        );
        self
    }

    #[track_caller]
    fn expect_deadline<T>(self, expected: &T, at: Option<DateTime<Utc>>) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        let found = self.timeline.deadlines.iter().any(|deadline| {
            deadline.value::<T>().as_ref() == Some(expected)
                && at.is_none_or(|at| deadline.due_at == at)
        });
        if !found {
            let due = at.map_or_else(|| "at any time".to_owned(), |at| format!("at {at}"));
            panic!(
                "expected a pending `{}` deadline due {due}: {expected:#?}\nbut the pending deadlines are {:#?}",
                T::NAME,
                self.pending_deadlines()
            );
        }
        self
    }

    /// Asserts the aggregate rejected the command with exactly this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error) -> Self
    where
        A::Error: PartialEq,
        A::Event: Debug,
    {
        match &self.result {
            Err(CommandError::Domain(error)) if *error == expected => {}
            Err(CommandError::Domain(error)) => panic!(
                "the command failed with another error than expected\n{}",
                diff(&expected, error)
            ),
            Err(error) => panic!(
                "expected the aggregate to reject the command with {expected:#?}\nbut it failed with: {error}"
            ),
            Ok(events) => panic!(
                "expected the aggregate to reject the command with {expected:#?}\nbut it recorded {events:#?}"
            ),
        }
        self
    }

    /// Asserts the command failed and `check` accepts the error, for errors
    /// outside the aggregate's own: `NotFound`, `AlreadyExists`, serialization.
    #[track_caller]
    pub fn then_expect_failure(self, check: impl FnOnce(&CommandError<A::Error>) -> bool) -> Self
    where
        A::Event: Debug,
    {
        match &self.result {
            Err(error) if check(error) => {}
            Err(error) => {
                panic!("the command failed with an unexpected error: {error}\n{error:#?}")
            }
            Ok(events) => panic!("expected the command to fail, but it recorded {events:#?}"),
        }
        self
    }

    /// Runs `check` (typically assertions) on the state after the recorded events.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&A)) -> Self {
        check(&self.timeline.state);
        self
    }
}

impl<A: Aggregate + Debug> Debug for TestOutcome<A>
where
    A::Event: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestOutcome")
            .field("state", &self.timeline.state)
            .field("result", &self.result)
            .field("now", &self.timeline.clock.now())
            .field("deadlines", &self.timeline.deadlines)
            .finish()
    }
}

/// A line diff of the pretty-printed values: `-` expected, `+` actual.
fn diff(expected: &dyn Debug, actual: &dyn Debug) -> String {
    let expected = format!("{expected:#?}");
    let actual = format!("{actual:#?}");
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();

    // Longest common subsequence by dynamic programming; test values are small.
    let mut lengths = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lengths[i][j] = if old[i] == new[j] {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let mut out = String::from("--- expected\n+++ actual\n");
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            let _ = writeln!(out, "  {}", old[i]);
            i += 1;
            j += 1;
        } else if j < new.len() && (i == old.len() || lengths[i][j + 1] >= lengths[i + 1][j]) {
            let _ = writeln!(out, "+ {}", new[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", old[i]);
            i += 1;
        }
    }
    out
}

/// Drives a future to completion on the current thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
