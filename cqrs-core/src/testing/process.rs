//! [`ProcessFixture`]: given aggregates' events, when an event, then expect
//! the commands a process manager sends and the deadlines it schedules;
//! after a while, what its deadlines did when they fell due.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use foldhash::HashMap;

use super::block_on;
use crate::aggregate::{Aggregate, Command, Event, IntoCommand};
use crate::app::{Cqrs, FireOutcome, ProcessContext, ProcessManager, SentCommand};
use crate::clock::{Clock, TestClock};
use crate::deadline::Deadline;
use crate::envelope::{Envelope, Metadata, NewEvent};
use crate::routing::IntoEvent;
use crate::store::{DueQuery, EventStore, MemoryStore, StoredDeadline};

/// Tests one process manager against a store in memory, as Axon's saga
/// fixture does: given the events of the aggregates it reads, when an
/// event, then expect the commands it sent and the deadlines it scheduled
/// or cancelled; [`after`](ProcessOutcome::after) a while, the commands
/// its due deadlines sent.
///
/// The manager's commands run against the given aggregates (so a handler
/// that reads a command's outcome sees a real one) and are recorded in the
/// order sent. Its deadlines are kept per instance, as an app keeps them,
/// and fire through its `#[deadline]` handlers when the fixture's clock
/// (2026-01-01T00:00Z unless [`at`](Self::at)) reaches them. Failures panic
/// with what was expected and what was found.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use cqrs_core::prelude::*;
/// use cqrs_core::testing::ProcessFixture;
/// use serde::{Deserialize, Serialize};
///
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct OpenTicket;
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct CloseTicket;
/// # #[derive(Debug, Clone, Command)]
/// # pub enum TicketCommand { Open(OpenTicket), Close(CloseTicket) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct TicketOpened;
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct TicketClosed;
/// # #[derive(Debug, Clone, PartialEq, Event)]
/// # pub enum TicketEvent { Opened(TicketOpened), Closed(TicketClosed) }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("closed")]
/// # pub struct TicketError;
/// # #[derive(Debug, Default, Aggregate)]
/// # #[aggregate(name = "doc.ticket", command = TicketCommand, event = TicketEvent, error = TicketError)]
/// # pub struct Ticket { closed: bool }
/// # #[aggregate_impl]
/// # impl Ticket {
/// #     #[command_handler(create)]
/// #     fn open(&self, _: OpenTicket) -> Result<TicketOpened, TicketError> { Ok(TicketOpened) }
/// #     #[command_handler]
/// #     fn close(&self, _: CloseTicket) -> Result<Option<TicketClosed>, TicketError> {
/// #         Ok((!self.closed).then_some(TicketClosed))
/// #     }
/// #     #[apply]
/// #     fn opened(&mut self, _: &TicketOpened) {}
/// #     #[apply]
/// #     fn closed(&mut self, _: &TicketClosed) { self.closed = true; }
/// # }
/// /// A ticket nobody answered in a day is closed.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
/// pub struct Unanswered;
///
/// #[derive(Default)]
/// pub struct Housekeeping;
///
/// #[process_manager(name = "doc.housekeeping")]
/// impl Housekeeping {
///     #[event_handler]
///     fn opened(&self, _: &TicketOpened) -> Schedule<Unanswered> {
///         Schedule::after(Duration::from_secs(24 * 3600), Unanswered)
///     }
///
///     #[deadline]
///     async fn unanswered(&self, _: Unanswered, context: &ProcessContext<'_>) -> Result<(), HandlerError> {
///         let ticket = &context.event().aggregate_id;
///         context.execute(ticket, CloseTicket).await?;
///         Ok(())
///     }
/// }
///
/// ProcessFixture::<Housekeeping>::new()
///     .given::<Ticket>("t-1", [TicketOpened])
///     .when::<Ticket>("t-1", TicketOpened)
///     .then_expect_no_commands()
///     .then_expect_deadline_after("t-1", Duration::from_secs(24 * 3600), Unanswered)
///     .after(Duration::from_secs(24 * 3600))
///     .then_expect_command("t-1", CloseTicket)
///     .then_expect_no_deadlines();
/// ```
pub struct ProcessFixture<M: ProcessManager> {
    manager: M,
    clock: TestClock,
    store: Arc<MemoryStore>,
    app: Cqrs,
    /// Each stream's version, as the given and handled events left it.
    versions: HashMap<(&'static str, String), u64>,
    /// The last event handed to the manager.
    last: Option<Envelope>,
}

impl<M: ProcessManager + Default> ProcessFixture<M> {
    /// A fixture for the manager's default value.
    pub fn new() -> Self {
        Self::with(M::default())
    }
}

impl<M: ProcessManager + Default> Default for ProcessFixture<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: ProcessManager> ProcessFixture<M> {
    /// A fixture for this manager value.
    ///
    /// # Panics
    ///
    /// If the app cannot be built: the registry of this test binary has
    /// two things under one name.
    #[track_caller]
    pub fn with(manager: M) -> Self {
        let clock = TestClock::at(super::start_of_test());
        let store = Arc::new(MemoryStore::new());
        let app = Cqrs::builder(Arc::clone(&store))
            .clock(clock.clone())
            .without_processors()
            .build()
            .unwrap_or_else(|error| panic!("the fixture's app does not build: {error}"));
        Self {
            manager,
            clock,
            store,
            app,
            versions: HashMap::default(),
            last: None,
        }
    }

    /// Starts the clock at `time`.
    pub fn at(self, time: DateTime<Utc>) -> Self {
        self.clock.set(time);
        self
    }

    /// Records past events of aggregate `A` with id `aggregate_id`, which the
    /// manager does not handle: the state its commands and
    /// [`ProcessContext::load`] find.
    #[track_caller]
    pub fn given<A: Aggregate>(
        mut self,
        aggregate_id: &str,
        events: impl IntoIterator<Item = impl IntoEvent<A::Event>>,
    ) -> Self {
        for event in events {
            self.record::<A>(aggregate_id, event.into_event());
        }
        self
    }

    /// Records an event of aggregate `A` with id `aggregate_id` and hands it
    /// to the manager, as the app would.
    #[track_caller]
    pub fn when<A: Aggregate>(
        mut self,
        aggregate_id: &str,
        event: impl IntoEvent<A::Event>,
    ) -> ProcessOutcome<M> {
        let envelope = self.record::<A>(aggregate_id, event.into_event());
        let recorder = Mutex::new(Vec::new());
        let result = self.handle(&envelope, &recorder);
        self.last = Some(envelope);
        ProcessOutcome {
            fixture: self,
            sent: recorder
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            result,
        }
    }

    /// Appends one event to its stream; the envelope the store gave back.
    #[track_caller]
    fn record<A: Aggregate>(&mut self, aggregate_id: &str, event: A::Event) -> Envelope {
        let event_type = event.event_type();
        let payload = event
            .encode()
            .unwrap_or_else(|error| panic!("the event does not serialize: {error}"));
        let version = self
            .versions
            .entry((A::NAME, aggregate_id.to_owned()))
            .or_default();
        let new = NewEvent {
            event_id: crate::id::new_id(),
            event_name: event_type.name,
            event_version: event_type.version,
            metadata: Metadata::default(),
            payload,
            tags: Vec::new(),
        };
        let stored = block_on(
            self.store
                .append(A::NAME, aggregate_id, *version, vec![new]),
        )
        .unwrap_or_else(|error| panic!("the fixture's store refused the event: {error}"));
        *version += 1;
        stored
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!("an append of one event returns it"))
    }

    /// Hands one envelope to the manager and writes its deadline changes.
    fn handle(
        &self,
        envelope: &Envelope,
        recorder: &Mutex<Vec<SentCommand>>,
    ) -> Result<(), String> {
        if !M::handles(&envelope.event_name) {
            return Ok(());
        }
        block_on(async {
            let context = ProcessContext::new(&self.app, M::NAME, envelope, Some(recorder));
            let changes = self
                .manager
                .handle(envelope, &context)
                .await
                .map_err(|error| error.to_string())?;
            self.app
                .change_process_deadlines(M::NAME, envelope, changes, envelope.position * 2, None)
                .await
                .map_err(|error| error.to_string())
        })
    }

    /// Fires every deadline due by the clock, earliest first, those their
    /// handlers schedule already due too; the first failure.
    fn fire_due(&self, recorder: &Mutex<Vec<SentCommand>>) -> Result<(), String> {
        let mut failure = None;
        loop {
            let query = DueQuery::new(self.clock.now(), usize::MAX).of([M::NAME]);
            let due =
                block_on(self.store.due_deadlines(query)).map_err(|error| error.to_string())?;
            if due.is_empty() {
                break;
            }
            for deadline in due {
                let fired = block_on(self.app.fire_process(
                    &self.manager,
                    deadline,
                    Some(recorder),
                ));
                if let FireOutcome::Failed(error) | FireOutcome::Outage(error) = fired {
                    // A failed fire stays claimed: it is not due again here.
                    failure.get_or_insert(error);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn pending(&self) -> Vec<StoredDeadline> {
        let query = DueQuery::new(DateTime::<Utc>::MAX_UTC, usize::MAX).of([M::NAME]);
        let mut pending = block_on(self.store.due_deadlines(query))
            .unwrap_or_else(|error| panic!("the fixture's store failed: {error}"));
        pending.sort_by_key(|pending| (pending.deadline.due_at, pending.deadline.deadline_id));
        pending
    }
}

/// What a [`ProcessFixture`] step came to (an event handled, or the
/// deadlines that fell due): the commands sent, and the `then_*`
/// assertions.
pub struct ProcessOutcome<M: ProcessManager> {
    fixture: ProcessFixture<M>,
    sent: Vec<SentCommand>,
    result: Result<(), String>,
}

impl<M: ProcessManager> ProcessOutcome<M> {
    /// The commands this step sent, in order.
    pub fn sent(&self) -> &[SentCommand] {
        &self.sent
    }

    /// The handler's failure, if it failed.
    pub fn result(&self) -> &Result<(), String> {
        &self.result
    }

    /// The manager's pending deadlines after this step, earliest first.
    pub fn pending_deadlines(&self) -> Vec<StoredDeadline> {
        self.fixture.pending()
    }

    /// The app the manager's commands run on, to read an aggregate.
    pub fn app(&self) -> &Cqrs {
        &self.fixture.app
    }

    /// Records and handles another event.
    pub fn and_when<A: Aggregate>(
        self,
        aggregate_id: &str,
        event: impl IntoEvent<A::Event>,
    ) -> Self {
        self.fixture.when::<A>(aggregate_id, event)
    }

    /// Hands the last event to the manager again, as the app does after a
    /// crash before its checkpoint moved: its commands answer as
    /// duplicates, and its deadline changes apply again only where no
    /// later change (a cancel, a fire) came since.
    ///
    /// # Panics
    ///
    /// If no event was handled yet.
    #[track_caller]
    pub fn redelivered(self) -> Self {
        let fixture = self.fixture;
        let envelope = fixture
            .last
            .clone()
            .unwrap_or_else(|| panic!("no event was handled yet"));
        let recorder = Mutex::new(Vec::new());
        let result = fixture.handle(&envelope, &recorder);
        Self {
            fixture,
            sent: recorder
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            result,
        }
    }

    /// Moves the clock forward by `by` and fires every deadline due by then,
    /// earliest first, each through the manager's `#[deadline]` handler.
    /// The outcome holds the commands they sent.
    pub fn after(self, by: Duration) -> Self {
        let fixture = self.fixture;
        fixture.clock.advance(by);
        let recorder = Mutex::new(Vec::new());
        let result = fixture.fire_due(&recorder);
        Self {
            fixture,
            sent: recorder
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            result,
        }
    }

    /// Asserts the step succeeded and sent exactly these commands, in
    /// order, as `(aggregate id, command)`.
    #[track_caller]
    pub fn then_expect_commands<C: IntoCommand>(
        self,
        expected: impl IntoIterator<Item = (&'static str, C)>,
    ) -> Self {
        let expected: Vec<SentCommand> = expected
            .into_iter()
            .map(|(aggregate_id, command)| sent(aggregate_id, command))
            .collect();
        self.expect_sent(&expected)
    }

    /// Asserts the step succeeded and sent exactly this one command.
    #[track_caller]
    pub fn then_expect_command(self, aggregate_id: &str, command: impl IntoCommand) -> Self {
        let expected = [sent(aggregate_id, command)];
        self.expect_sent(&expected)
    }

    /// Asserts the step succeeded and sent no command.
    #[track_caller]
    pub fn then_expect_no_commands(self) -> Self {
        self.expect_sent(&[])
    }

    #[track_caller]
    fn expect_sent(self, expected: &[SentCommand]) -> Self {
        if let Err(error) = &self.result {
            panic!("expected commands {expected:#?}\nbut the handler failed: {error}");
        }
        assert!(
            self.sent == expected,
            "the manager sent other commands than expected\n{}",
            super::diff(&expected, &self.sent)
        );
        self
    }

    /// Asserts the handler failed, and the failure reads as `check` wants.
    #[track_caller]
    pub fn then_expect_failure(self, check: impl FnOnce(&str) -> bool) -> Self {
        match &self.result {
            Ok(()) => panic!("expected the handler to fail, but it succeeded"),
            Err(error) => assert!(check(error), "the handler failed otherwise: {error}"),
        }
        self
    }

    /// Asserts a deadline equal to `expected` is pending for `instance`
    /// (due at any time).
    #[track_caller]
    pub fn then_expect_deadline<T>(self, instance: &str, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        self.expect_deadline(instance, &expected, None)
    }

    /// Asserts a deadline equal to `expected` is pending for `instance`,
    /// due at `at`.
    #[track_caller]
    pub fn then_expect_deadline_at<T>(self, instance: &str, at: DateTime<Utc>, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        self.expect_deadline(instance, &expected, Some(at))
    }

    /// Asserts a deadline equal to `expected` is pending for `instance`,
    /// due `by` after the fixture's clock now.
    #[track_caller]
    pub fn then_expect_deadline_after<T>(self, instance: &str, by: Duration, expected: T) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        let at = crate::deadline::Due::After(by).resolve(self.fixture.clock.now());
        self.expect_deadline(instance, &expected, Some(at))
    }

    /// Asserts no deadline of type `T` is pending for `instance`.
    #[track_caller]
    pub fn then_expect_no_deadline<T: Deadline>(self, instance: &str) -> Self {
        let pending: Vec<StoredDeadline> = self
            .pending_deadlines()
            .into_iter()
            .filter(|pending| pending.aggregate_id == instance && pending.deadline.name == T::NAME)
            .collect();
        assert!(
            pending.is_empty(),
            "expected no pending `{}` deadline of {instance}, but found {pending:#?}",
            T::NAME
        );
        self
    }

    /// Asserts the manager has no pending deadline.
    #[track_caller]
    pub fn then_expect_no_deadlines(self) -> Self {
        let pending = self.pending_deadlines();
        assert!(
            pending.is_empty(),
            "expected no pending deadlines, but found {pending:#?}"
        );
        self
    }

    #[track_caller]
    fn expect_deadline<T>(self, instance: &str, expected: &T, at: Option<DateTime<Utc>>) -> Self
    where
        T: Deadline + PartialEq + Debug,
    {
        let pending = self.pending_deadlines();
        let found = pending.iter().any(|pending| {
            pending.aggregate_id == instance
                && pending.deadline.name == T::NAME
                && pending.deadline.payload.decode::<T>().ok().as_ref() == Some(expected)
                && at.is_none_or(|at| pending.deadline.due_at == at)
        });
        if !found {
            let due = at.map_or_else(|| "at any time".to_owned(), |at| format!("at {at}"));
            panic!(
                "expected a pending `{}` deadline of {instance} due {due}: {expected:#?}\nbut the pending deadlines are {pending:#?}",
                T::NAME
            );
        }
        self
    }
}

/// A command as the fixture records it when sent.
fn sent(aggregate_id: &str, command: impl IntoCommand) -> SentCommand {
    let aggregate_type = command_aggregate(&command);
    let command = command.into_command();
    SentCommand {
        aggregate_type,
        aggregate_id: aggregate_id.to_owned(),
        name: command.name(),
        payload: command.encode().map_err(|error| error.to_string()),
    }
}

fn command_aggregate<C: IntoCommand>(_: &C) -> &'static str {
    <C::Aggregate as Aggregate>::NAME
}

impl<M: ProcessManager> Debug for ProcessFixture<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessFixture")
            .field("manager", &M::NAME)
            .field("now", &self.clock.now())
            .field("streams", &self.versions)
            .finish_non_exhaustive()
    }
}

impl<M: ProcessManager> Debug for ProcessOutcome<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessOutcome")
            .field("fixture", &self.fixture)
            .field("sent", &self.sent)
            .field("result", &self.result)
            .finish()
    }
}
