use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct Open;

#[derive(Debug, Clone, Command)]
pub enum DoorCommand {
    Open(Open),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened;

#[derive(Debug, Clone, PartialEq, Event)]
pub enum DoorEvent {
    Opened(Opened),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct DoorError;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "door", command = DoorCommand, event = DoorEvent, error = DoorError)]
pub struct Door;

#[aggregate_impl]
impl Door {
    #[command_handler(create)]
    fn open(&self, _: Open) -> Result<Opened, DoorError> {
        Ok(Opened)
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

fn main() {}
