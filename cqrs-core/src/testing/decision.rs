//! [`DecisionFixture`]: given events of any stream, when a decision's
//! command, then expect the events it records or its error.

use std::fmt::Debug;

use chrono::Utc;
use uuid::Uuid;

use super::diff;
use crate::aggregate::Event;
use crate::app::{decode, decode_error};
use crate::boundary::Tag;
use crate::decision_model::DecisionModel;
use crate::envelope::{Envelope, Metadata};
use crate::error::CommandError;
use crate::routing::IntoEvent;

/// Tests one decision without a store: given events recorded anywhere,
/// when a command on a boundary, then expect the events it records or the
/// error it refuses with.
///
/// Only the given events the decision's query selects reach its `#[apply]`
/// methods, as in a store: an event of another course, or without the
/// decision's tags, is left out. Every event goes through serialization
/// and back.
///
/// # Examples
///
/// ```
/// # use cqrs_core::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// use cqrs_core::testing::DecisionFixture;
///
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct SeatTaken { pub flight: String, pub passenger: String }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
/// # pub enum SeatEvent {
/// #     #[event(name = "doc.fixture.seat_taken", tags(flight))]
/// #     Taken(SeatTaken),
/// # }
/// # #[derive(Debug, Clone)]
/// # pub struct TakeSeat { pub passenger: String }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("full")]
/// # pub struct Full;
/// #[derive(Debug, Clone, Default, DecisionModel)]
/// #[decision(name = "doc.fixture.seats", command = TakeSeat, event = SeatEvent, error = Full)]
/// pub struct Seats {
///     #[tag]
///     flight: String,
///     taken: u32,
/// }
///
/// #[decision_impl]
/// impl Seats {
///     #[command_handler]
///     fn take(&self, command: TakeSeat) -> Result<SeatTaken, Full> {
///         if self.taken >= 2 {
///             return Err(Full);
///         }
///         Ok(SeatTaken { flight: self.flight.clone(), passenger: command.passenger })
///     }
///
///     #[apply]
///     fn taken(&mut self, _: &SeatTaken) {
///         self.taken += 1;
///     }
/// }
///
/// let seats = || Seats { flight: "ba-1".into(), taken: 0 };
/// let taken = |flight: &str, passenger: &str| SeatTaken { flight: flight.into(), passenger: passenger.into() };
/// DecisionFixture::new(seats())
///     .given([taken("ba-1", "ada"), taken("ba-1", "grace")])
///     .when(TakeSeat { passenger: "alan".into() })
///     .then_expect_error(Full);
/// // Another flight's seats are not on this boundary.
/// DecisionFixture::new(seats())
///     .given([taken("ba-1", "ada"), taken("lh-2", "grace")])
///     .when(TakeSeat { passenger: "alan".into() })
///     .then_expect_events([taken("ba-1", "alan")]);
/// ```
#[derive(Debug)]
pub struct DecisionFixture<D: DecisionModel> {
    model: D,
    given: Vec<(Envelope, Vec<Tag>)>,
    /// A given event that would not encode, or whose tags are invalid.
    broken: Option<String>,
}

impl<D: DecisionModel> DecisionFixture<D> {
    /// A fixture deciding on the boundary `model` names.
    pub fn new(model: D) -> Self {
        Self {
            model,
            given: Vec::new(),
            broken: None,
        }
    }

    /// Events recorded before the command, of any event enum, in order.
    pub fn given<E: Event, T: IntoEvent<E>>(mut self, events: impl IntoIterator<Item = T>) -> Self {
        for event in events {
            let event = event.into_event();
            let event_type = event.event_type();
            let (payload, tags) = match (event.encode(), event.tags()) {
                (Ok(payload), Ok(tags)) => (payload, tags),
                (Err(error), _) => {
                    self.broken = Some(format!("given `{}`: {error}", event_type.name));
                    continue;
                }
                (_, Err(error)) => {
                    self.broken = Some(format!("given `{}`: {error}", event_type.name));
                    continue;
                }
            };
            let position = self.given.len() as u64 + 1;
            let envelope = Envelope {
                event_id: Uuid::now_v7(),
                aggregate_type: "given".to_owned(),
                aggregate_id: position.to_string(),
                sequence: 1,
                position,
                event_name: event_type.name.to_owned(),
                event_version: event_type.version,
                recorded_at: Utc::now(),
                metadata: Metadata::default(),
                payload,
            };
            self.given.push((envelope, tags));
        }
        self
    }

    /// Runs the command on the state the selected given events build.
    #[track_caller]
    pub fn when(self, command: D::Command) -> DecisionOutcome<D> {
        if let Some(broken) = self.broken {
            panic!("{broken}");
        }
        let mut state = self.model;
        let result = decide(&mut state, &self.given, command);
        DecisionOutcome { result, state }
    }
}

/// Applies what the query selects, decides, and round-trips the decided
/// events through JSON.
fn decide<D: DecisionModel>(
    state: &mut D,
    given: &[(Envelope, Vec<Tag>)],
    command: D::Command,
) -> Result<Vec<D::Event>, CommandError<D::Error>> {
    let query = state.query()?;
    for (envelope, tags) in given {
        if query.matches(&envelope.event_name, tags) {
            state
                .apply_recorded(envelope)
                .map_err(|source| CommandError::Decode(decode_error(envelope, source)))?;
        }
    }
    let decision = state.decide(command).map_err(CommandError::Domain)?;
    decision
        .events
        .iter()
        .map(|event| {
            let event_type = event.event_type();
            event.tags()?;
            let payload = event.encode().map_err(|source| CommandError::Encode {
                event_name: event_type.name,
                source,
            })?;
            let envelope = Envelope {
                event_id: Uuid::now_v7(),
                aggregate_type: D::NAME.to_owned(),
                aggregate_id: String::new(),
                sequence: 1,
                position: 1,
                event_name: event_type.name.to_owned(),
                event_version: event_type.version,
                recorded_at: Utc::now(),
                metadata: Metadata::default(),
                payload,
            };
            decode(&envelope).map_err(CommandError::Decode)
        })
        .collect()
}

/// What a [`DecisionFixture`]'s command came to, with the `then_*`
/// assertions.
pub struct DecisionOutcome<D: DecisionModel> {
    result: Result<Vec<D::Event>, CommandError<D::Error>>,
    state: D,
}

impl<D: DecisionModel> DecisionOutcome<D> {
    /// The events decided, or the error.
    pub fn result(&self) -> &Result<Vec<D::Event>, CommandError<D::Error>> {
        &self.result
    }

    /// Asserts the command succeeded with exactly these events, in order.
    #[track_caller]
    pub fn then_expect_events<T>(self, expected: impl IntoIterator<Item = T>) -> Self
    where
        T: IntoEvent<D::Event>,
        D::Event: PartialEq + Debug,
        D::Error: Debug,
    {
        let expected: Vec<D::Event> = expected.into_iter().map(IntoEvent::into_event).collect();
        match &self.result {
            Ok(events) if *events == expected => {}
            Ok(events) => panic!(
                "the decision recorded other events than expected\n{}",
                diff(&expected, events)
            ),
            Err(error) => {
                panic!("expected events {expected:#?}\nbut the decision failed: {error:#?}")
            }
        }
        self
    }

    /// Asserts the decision refused the command with exactly this error.
    #[track_caller]
    pub fn then_expect_error(self, expected: D::Error) -> Self
    where
        D::Error: PartialEq + Debug,
        D::Event: Debug,
    {
        match &self.result {
            Err(CommandError::Domain(error)) if *error == expected => {}
            Err(CommandError::Domain(error)) => panic!(
                "the decision failed with another error than expected\n{}",
                diff(&expected, error)
            ),
            Err(error) => panic!(
                "expected the decision to refuse with {expected:#?}\nbut it failed with: {error:#?}"
            ),
            Ok(events) => panic!(
                "expected the decision to refuse with {expected:#?}\nbut it recorded {events:#?}"
            ),
        }
        self
    }

    /// Runs `check` on the state the decision decided on.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&D)) -> Self {
        check(&self.state);
        self
    }
}

impl<D> Debug for DecisionOutcome<D>
where
    D: DecisionModel + Debug,
    D::Event: Debug,
    D::Error: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionOutcome")
            .field("result", &self.result)
            .field("state", &self.state)
            .finish()
    }
}
