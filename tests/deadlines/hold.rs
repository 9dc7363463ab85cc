//! The aggregate the suite's nodes share: a hold that expires at its due
//! time unless it was cancelled first, and records when it was released.

use chrono::{DateTime, Utc};
use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// The stored name of the aggregate.
pub const HOLD: &str = "deadlines_suite.hold";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceHold {
    pub due_at: DateTime<Utc>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelHold;

#[derive(Debug, Clone, Command)]
pub enum HoldCommand {
    Place(PlaceHold),
    Cancel(CancelHold),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPlaced {
    pub due_at: DateTime<Utc>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldCancelled;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    /// When its deadline was due.
    pub due_at: DateTime<Utc>,
    /// The time its handler decided at.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum HoldEvent {
    #[event(name = "deadlines_suite.placed")]
    Placed(HoldPlaced),
    #[event(name = "deadlines_suite.cancelled")]
    Cancelled(HoldCancelled),
    #[event(name = "deadlines_suite.released")]
    Released(HoldReleased),
}

/// The hold's release, due when it was placed for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
#[deadline_type(name = "deadlines_suite.expires")]
pub struct Expires;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HoldError {
    #[error("the hold is already {0}")]
    Closed(&'static str),
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "deadlines_suite.hold", command = HoldCommand, event = HoldEvent, error = HoldError)]
pub struct Hold {
    cancelled: bool,
    released: bool,
}

#[aggregate_impl]
impl Hold {
    #[command_handler(create)]
    fn place(&self, command: PlaceHold) -> Result<(HoldPlaced, Schedule<Expires>), HoldError> {
        let due_at = command.due_at;
        Ok((HoldPlaced { due_at }, Schedule::at(due_at, Expires)))
    }

    #[command_handler]
    fn cancel(&self, _: CancelHold) -> Result<(HoldCancelled, Cancel<Expires>), HoldError> {
        match () {
            _ if self.released => Err(HoldError::Closed("released")),
            _ if self.cancelled => Err(HoldError::Closed("cancelled")),
            _ => Ok((HoldCancelled, Cancel::new())),
        }
    }

    #[deadline]
    fn expires(
        &self,
        _: Expires,
        context: &DeadlineContext<'_>,
    ) -> Result<Option<HoldReleased>, HoldError> {
        let open = !self.cancelled && !self.released;
        Ok(open.then(|| HoldReleased {
            due_at: context.due_at,
            at: context.now(),
        }))
    }

    #[apply]
    fn placed(&mut self, _: &HoldPlaced) {}

    #[apply]
    fn cancelled(&mut self, _: &HoldCancelled) {
        self.cancelled = true;
    }

    #[apply]
    fn released(&mut self, _: &HoldReleased) {
        self.released = true;
    }
}
