//! The orders service's domain: an order is placed, then shipped when
//! shipping says its shipment left.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

use super::shipping::ShipmentDispatched;

/// The orders service's domain: its app hosts it with
/// `CqrsBuilder::host::<OrdersService>()`.
#[derive(Domain)]
pub struct OrdersService;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub item: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkShipped {
    pub shipment: String,
}

#[derive(Debug, Clone, Command)]
pub enum OrderCommand {
    Place(PlaceOrder),
    MarkShipped(MarkShipped),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub item: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub shipment: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    #[event(name = "OrderPlaced")]
    Placed(OrderPlaced),
    #[event(name = "OrderShipped")]
    Shipped(OrderShipped),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs a quantity")]
    NoQuantity,
    #[error("the order was shipped already, by shipment {0}")]
    AlreadyShipped(String),
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "Order", command = OrderCommand, event = OrderEvent, error = OrderError)]
pub struct Order {
    pub shipment: Option<String>,
}

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(&self, command: PlaceOrder) -> Result<OrderPlaced, OrderError> {
        if command.quantity == 0 {
            return Err(OrderError::NoQuantity);
        }
        Ok(OrderPlaced {
            item: command.item,
            quantity: command.quantity,
        })
    }

    #[command_handler]
    fn mark_shipped(&self, command: MarkShipped) -> Result<OrderShipped, OrderError> {
        if let Some(shipment) = &self.shipment {
            return Err(OrderError::AlreadyShipped(shipment.clone()));
        }
        Ok(OrderShipped {
            shipment: command.shipment,
        })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn shipped(&mut self, event: &OrderShipped) {
        self.shipment = Some(event.shipment.clone());
    }
}

/// Marks an order shipped when shipping's `ShipmentDispatched` arrives
/// (received from the broker into the orders log). The command id comes
/// from the event id, so a second delivery changes nothing.
#[derive(Debug, Default)]
pub struct Shipping;

#[process_manager(name = "orders.shipping")]
impl Shipping {
    #[event_handler]
    async fn dispatched(
        &self,
        event: &ShipmentDispatched,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let shipped = MarkShipped {
            shipment: envelope.aggregate_id.clone(),
        };
        context.execute(&event.order_id, shipped).await?;
        Ok(())
    }
}
