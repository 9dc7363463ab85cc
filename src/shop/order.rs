//! Orders: placed with one line, then confirmed or cancelled once; an
//! order whose payment has not arrived within [`PAYMENT_WINDOW`] cancels
//! itself.

use std::time::Duration;

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// How long an order waits for its payment before it is cancelled.
pub const PAYMENT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Why an order whose payment never came was cancelled.
pub const PAYMENT_TIMED_OUT: &str = "payment not received within 15 minutes";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub card: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmOrder;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Clone, Command)]
pub enum OrderCommand {
    Place(PlaceOrder),
    Confirm(ConfirmOrder),
    Cancel(CancelOrder),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub total: u64,
    pub card: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    #[event(name = "shop.order.placed")]
    Placed(OrderPlaced),
    #[event(name = "shop.order.confirmed")]
    Confirmed(OrderConfirmed),
    #[event(name = "shop.order.cancelled")]
    Cancelled(OrderCancelled),
}

/// The order's payment window closes: scheduled when the order is placed,
/// cancelled when it is confirmed or cancelled first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
#[deadline_type(name = "shop.order.payment_due")]
pub struct PaymentDue;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs a quantity")]
    NoQuantity,
    #[error("the order is already {0}")]
    Closed(&'static str),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    Open,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "shop.order", command = OrderCommand, event = OrderEvent, error = OrderError)]
pub struct Order {
    pub status: OrderStatus,
    pub sku: String,
    pub quantity: u32,
    pub total: u64,
    pub card: String,
}

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(
        &self,
        command: PlaceOrder,
    ) -> Result<(OrderPlaced, Schedule<PaymentDue>), OrderError> {
        if command.quantity == 0 {
            return Err(OrderError::NoQuantity);
        }
        let placed = OrderPlaced {
            total: u64::from(command.quantity) * command.unit_price,
            customer: command.customer,
            sku: command.sku,
            quantity: command.quantity,
            card: command.card,
        };
        Ok((placed, Schedule::after(PAYMENT_WINDOW, PaymentDue)))
    }

    #[command_handler]
    fn confirm(&self, _: ConfirmOrder) -> Result<(OrderConfirmed, Cancel<PaymentDue>), OrderError> {
        self.still_open()?;
        Ok((OrderConfirmed, Cancel::new()))
    }

    #[command_handler]
    fn cancel(
        &self,
        command: CancelOrder,
    ) -> Result<(OrderCancelled, Cancel<PaymentDue>), OrderError> {
        self.still_open()?;
        let cancelled = OrderCancelled {
            reason: command.reason,
        };
        Ok((cancelled, Cancel::new()))
    }

    /// The payment window closed: an order still open is cancelled (the
    /// checkout gives its stock back).
    #[deadline]
    fn payment_due(&self, _: PaymentDue) -> Result<Option<OrderCancelled>, OrderError> {
        Ok((self.status == OrderStatus::Open).then(|| OrderCancelled {
            reason: PAYMENT_TIMED_OUT.to_owned(),
        }))
    }

    fn still_open(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Open => Ok(()),
            OrderStatus::Confirmed => Err(OrderError::Closed("confirmed")),
            OrderStatus::Cancelled => Err(OrderError::Closed("cancelled")),
        }
    }

    #[apply]
    fn placed(&mut self, event: &OrderPlaced) {
        self.sku = event.sku.clone();
        self.quantity = event.quantity;
        self.total = event.total;
        self.card = event.card.clone();
    }

    #[apply]
    fn confirmed(&mut self, _: &OrderConfirmed) {
        self.status = OrderStatus::Confirmed;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.status = OrderStatus::Cancelled;
    }
}
