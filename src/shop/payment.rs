//! The payment of one order: captured, or declined (cards starting with
//! 0000).

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub card: String,
    pub amount: u64,
}

#[derive(Debug, Clone, Command)]
pub enum PaymentCommand {
    Charge(ChargeCard),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum PaymentEvent {
    #[event(name = "shop.payment.captured")]
    Captured(PaymentCaptured),
    #[event(name = "shop.payment.declined")]
    Declined(PaymentDeclined),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PaymentError {}

/// The payment of one order (the aggregate id is the order id).
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "shop.payment", command = PaymentCommand, event = PaymentEvent, error = PaymentError)]
pub struct Payment;

#[aggregate_impl]
impl Payment {
    /// Cards starting with 0000 are declined: a fact, not an error.
    #[command_handler(create)]
    fn charge(&self, command: ChargeCard) -> Result<PaymentEvent, PaymentError> {
        if command.card.starts_with("0000") {
            return Ok(PaymentDeclined {
                reason: "card declined".into(),
            }
            .into());
        }
        Ok(PaymentCaptured {
            amount: command.amount,
        }
        .into())
    }

    #[apply]
    fn captured(&mut self, _: &PaymentCaptured) {}

    #[apply]
    fn declined(&mut self, _: &PaymentDeclined) {}
}
