use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingTaken {
    pub booking: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub enum BookingEvent {
    #[event(tags(booking))]
    Taken(BookingTaken),
}

#[derive(Debug, Clone)]
pub struct TakeBooking;

#[derive(Debug, Clone)]
pub struct ReleaseBooking;

#[derive(Debug, thiserror::Error)]
#[error("taken")]
pub struct Taken;

#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(name = "booking", command = TakeBooking, event = BookingEvent, error = Taken)]
pub struct UniqueBooking {
    #[tag]
    booking: String,
}

#[decision_impl]
impl UniqueBooking {
    #[command_handler]
    fn take(&self, _: TakeBooking) -> Result<BookingTaken, Taken> {
        Ok(BookingTaken { booking: self.booking.clone() })
    }

    #[command_handler]
    fn release(&self, _: ReleaseBooking) -> Result<(), Taken> {
        Ok(())
    }

    #[apply]
    fn taken(&mut self, _: &BookingTaken) {}
}

fn main() {}
