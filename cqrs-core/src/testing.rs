//! [`TestFixture`]: given events, when a command, then expect events, an error
//! or a state.

use std::any::Any;
use std::fmt::{self, Debug, Write as _};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use chrono::Utc;
use uuid::Uuid;

use crate::aggregate::{Aggregate, CommandContext, Event, IntoCommand};
use crate::app::decode;
use crate::clock::{Clock, SystemClock};
use crate::envelope::{Envelope, Metadata};
use crate::error::CommandError;
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
    clock: Arc<dyn Clock>,
}

impl<A: Aggregate> TestFixture<A> {
    /// A fixture for aggregate `test-aggregate` with no history.
    pub fn new() -> Self {
        Self {
            aggregate_id: "test-aggregate".to_owned(),
            history: Vec::new(),
            services: None,
            metadata: Metadata::default(),
            clock: Arc::new(SystemClock),
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

    /// The clock the command handler reads through
    /// [`CommandContext::now`]: a [`TestClock`](crate::TestClock) set to the
    /// time the test needs (the system's clock by default).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
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

    /// Runs `command` on the aggregate rebuilt from the given events, under the
    /// same rules as `Cqrs::execute` (create and existing commands included).
    ///
    /// An `async` handler is driven to completion on the calling thread.
    pub fn when(self, command: impl IntoCommand<Aggregate = A>) -> TestOutcome<A> {
        let mut state = A::initial();
        for event in &self.history {
            state.apply(event);
        }
        let version = self.history.len() as u64;
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
        let result = block_on(decide(
            &state,
            &self.aggregate_id,
            version,
            command.into_command(),
            &self.metadata,
            &services,
            &*self.clock,
        ));
        if let Ok(events) = &result {
            for event in events {
                state.apply(event);
            }
        }
        TestOutcome { state, result }
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
            .finish_non_exhaustive()
    }
}

async fn decide<A: Aggregate>(
    state: &A,
    aggregate_id: &str,
    version: u64,
    command: A::Command,
    metadata: &Metadata,
    services: &A::Services,
    clock: &dyn Clock,
) -> Result<Vec<A::Event>, CommandError<A::Error>> {
    let context = CommandContext {
        aggregate_id,
        version,
        metadata,
        clock,
    };
    let events = state.handle(command, &context, services).await?;
    events
        .into_iter()
        .zip(version + 1..)
        .map(|(event, sequence)| round_trip::<A>(aggregate_id, sequence, &event))
        .collect()
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

/// What a [`TestFixture`] command came to, with the `then_*` assertions.
pub struct TestOutcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, CommandError<A::Error>>,
}

impl<A: Aggregate> TestOutcome<A> {
    /// The recorded events, or the error.
    pub fn result(&self) -> &Result<Vec<A::Event>, CommandError<A::Error>> {
        &self.result
    }

    /// The state after the recorded events (the given state if the command failed).
    pub fn state(&self) -> &A {
        &self.state
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
        check(&self.state);
        self
    }
}

impl<A: Aggregate + Debug> Debug for TestOutcome<A>
where
    A::Event: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestOutcome")
            .field("state", &self.state)
            .field("result", &self.result)
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
