//! Parked events as a views backend keeps them: the event a processor set
//! aside, where it stands, what an operator decides about it, and how its
//! retry came out. The processor runtime parks and retries them
//! (`processor/parking.rs`); the backends store them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::Envelope;

/// An event a processor set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The processor (its checkpoint key).
    pub processor: String,
    /// The segment the event belongs to.
    pub segment: u32,
    /// The event's position in the log; for a message an inbox parked, its
    /// place among the messages that inbox received.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream's aggregate type.
    pub aggregate_type: String,
    /// Its stream's aggregate id.
    pub aggregate_id: String,
    /// Its stored name.
    pub event_name: String,
    /// Why its handler failed; `None` for an event that waits behind an
    /// earlier parked event of its stream and was never tried.
    pub error: Option<String>,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// Where it stands.
    pub state: ParkState,
    /// When it was retried or skipped.
    pub decided_at: Option<DateTime<Utc>>,
    /// For a message an inbox parked, the message as JSON (its attributes
    /// and body), which a retry handles again; `None` for an event of the
    /// log, which a retry reads there.
    pub message: Option<String>,
}

impl ParkedEvent {
    /// `envelope`, parked by `processor` in `segment`.
    pub(crate) fn of(
        processor: &str,
        segment: u32,
        envelope: &Envelope,
        error: Option<String>,
        attempts: u32,
    ) -> Self {
        Self {
            processor: processor.to_owned(),
            segment,
            position: envelope.position,
            event_id: envelope.event_id,
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            event_name: envelope.event_name.clone(),
            error,
            attempts,
            parked_at: Utc::now(),
            state: ParkState::Parked,
            decided_at: None,
            message: None,
        }
    }

    /// Whether it still holds up its stream.
    pub fn is_blocking(&self) -> bool {
        matches!(self.state, ParkState::Parked | ParkState::Retrying)
    }

    /// Its stream, as (aggregate type, aggregate id).
    pub fn stream(&self) -> (String, String) {
        (self.aggregate_type.clone(), self.aggregate_id.clone())
    }
}

/// Where a parked event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParkState {
    /// Set aside; its stream waits.
    Parked,
    /// Asked to be retried; the segment's owner retries it next, in order.
    Retrying,
    /// Retried and handled: kept as a record.
    Retried,
    /// Skipped by an operator, never handled: kept as a record.
    Skipped,
}

impl ParkState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Retrying => "retrying",
            Self::Retried => "retried",
            Self::Skipped => "skipped",
        }
    }

    /// The state stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "parked" => Self::Parked,
            "retrying" => Self::Retrying,
            "retried" => Self::Retried,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// What an operator decides about a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Handle the parked events of its stream again, in order (after a
    /// fix is deployed).
    Retry,
    /// Never handle this event; the events of its stream behind it are
    /// handled next.
    Skip,
}

/// How a retried parked event came out, recorded in the batch that retried it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Handled: kept as [`ParkState::Retried`].
    Handled,
    /// Failed again: parked again with this error.
    Failed(String),
    /// Not tried, because an earlier event of its stream failed again: back
    /// to waiting.
    Waiting,
}
