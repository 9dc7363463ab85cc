use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Close;

#[derive(Debug, Clone, Command)]
pub enum DoorCommand {
    Open(Open),
    Close(Close),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opened;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Closed;

#[derive(Debug, Clone, Event)]
pub enum DoorEvent {
    Opened(Opened),
    Closed(Closed),
}

#[derive(Debug, thiserror::Error)]
#[error("the door is stuck")]
pub struct DoorError;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "door", command = DoorCommand, event = DoorEvent, error = DoorError)]
pub struct Door {
    open: bool,
}

#[aggregate_impl]
impl Door {
    #[command_handler(create)]
    fn open(&self, _: Open) -> Result<Opened, DoorError> {
        Ok(Opened)
    }

    #[command_handler]
    fn close(&self, _: Close) -> Result<Closed, DoorError> {
        Ok(Closed)
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {
        self.open = true;
    }

    #[apply]
    fn closed(&mut self, _: &Closed) {
        self.open = false;
    }
}

/// A table projection whose handler writes views.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DoorReport;

#[projection(
    name = "door_report",
    tables(door_openings),
    migrations(sqlite("sql/door_openings.sql"))
)]
impl DoorReport {
    #[event_handler]
    async fn opened(_: &Opened, _: &mut Views<'_, Self>) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
