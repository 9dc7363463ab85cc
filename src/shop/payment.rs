//! The payment of one order: captured, or declined (cards starting with
//! 0000).

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub card: String,
    pub amount: u64,
}

/// Gives a captured payment back (its order was cancelled first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub reason: String,
}

#[derive(Debug, Clone, Command)]
pub enum PaymentCommand {
    Charge(ChargeCard),
    Refund(RefundPayment),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub amount: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum PaymentEvent {
    #[event(name = "shop.payment.captured")]
    Captured(PaymentCaptured),
    #[event(name = "shop.payment.declined")]
    Declined(PaymentDeclined),
    #[event(name = "shop.payment.refunded")]
    Refunded(PaymentRefunded),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PaymentError {}

/// The payment of one order (the aggregate id is the order id).
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "shop.payment", command = PaymentCommand, event = PaymentEvent, error = PaymentError)]
pub struct Payment {
    /// What was captured and not refunded.
    held: u64,
}

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

    /// Refunds what was captured; a payment with nothing to give back
    /// records nothing.
    #[command_handler]
    fn refund(&self, command: RefundPayment) -> Result<Option<PaymentRefunded>, PaymentError> {
        Ok((self.held > 0).then_some(PaymentRefunded {
            amount: self.held,
            reason: command.reason,
        }))
    }

    #[apply]
    fn captured(&mut self, event: &PaymentCaptured) {
        self.held = event.amount;
    }

    #[apply]
    fn refunded(&mut self, _: &PaymentRefunded) {
        self.held = 0;
    }

    #[apply]
    fn declined(&mut self, _: &PaymentDeclined) {}
}
