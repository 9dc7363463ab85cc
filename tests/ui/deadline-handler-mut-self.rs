use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pay;

#[derive(Debug, Clone, Command)]
pub enum HoldCommand {
    Place(Place),
    Pay(Pay),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released;

#[derive(Debug, Clone, Event)]
pub enum HoldEvent {
    Placed(Placed),
    Released(Released),
}

#[derive(Debug, Clone, Serialize, Deserialize, Deadline)]
pub struct Expires;

#[derive(Debug, thiserror::Error)]
#[error("the hold is gone")]
pub struct HoldError;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "hold", command = HoldCommand, event = HoldEvent, error = HoldError)]
pub struct Hold;

#[aggregate_impl]
impl Hold {
    #[command_handler(create)]
    fn place(&self, _: Place) -> Result<(Placed, Schedule<Expires>), HoldError> {
        Ok((Placed, Schedule::after(std::time::Duration::from_secs(900), Expires)))
    }

    #[command_handler]
    fn pay(&self, _: Pay) -> Result<(), HoldError> {
        Ok(())
    }

    #[deadline]
    fn expires(&mut self, _: Expires) -> Result<Released, HoldError> {
        Ok(Released)
    }

    #[apply]
    fn placed(&mut self, _: &Placed) {}

    #[apply]
    fn released(&mut self, _: &Released) {}
}

fn main() {}
