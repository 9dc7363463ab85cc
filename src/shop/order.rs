//! Orders: placed with one line, then confirmed or cancelled once.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

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
    fn place(&self, command: PlaceOrder) -> Result<OrderPlaced, OrderError> {
        if command.quantity == 0 {
            return Err(OrderError::NoQuantity);
        }
        Ok(OrderPlaced {
            total: u64::from(command.quantity) * command.unit_price,
            customer: command.customer,
            sku: command.sku,
            quantity: command.quantity,
            card: command.card,
        })
    }

    #[command_handler]
    fn confirm(&self, _: ConfirmOrder) -> Result<OrderConfirmed, OrderError> {
        self.still_open()?;
        Ok(OrderConfirmed)
    }

    #[command_handler]
    fn cancel(&self, command: CancelOrder) -> Result<OrderCancelled, OrderError> {
        self.still_open()?;
        Ok(OrderCancelled {
            reason: command.reason,
        })
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
