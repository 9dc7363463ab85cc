//! The shipping service's domain: a shipment is dispatched for each order
//! placed, once.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

use super::orders::OrderPlaced;

/// The shipping service's domain: its app hosts it with
/// `CqrsBuilder::host::<ShippingService>()`.
#[derive(Domain)]
pub struct ShippingService;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchShipment {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Command)]
pub enum ShipmentCommand {
    Dispatch(DispatchShipment),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDispatched {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum ShipmentEvent {
    #[event(name = "ShipmentDispatched")]
    Dispatched(ShipmentDispatched),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ShipmentError {
    #[error("a shipment needs an order")]
    NoOrder,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "Shipment", command = ShipmentCommand, event = ShipmentEvent, error = ShipmentError)]
pub struct Shipment {
    pub order_id: String,
}

#[aggregate_impl]
impl Shipment {
    #[command_handler(create)]
    fn dispatch(&self, command: DispatchShipment) -> Result<ShipmentDispatched, ShipmentError> {
        if command.order_id.is_empty() {
            return Err(ShipmentError::NoOrder);
        }
        Ok(ShipmentDispatched {
            order_id: command.order_id,
            quantity: command.quantity,
        })
    }

    #[apply]
    fn dispatched(&mut self, event: &ShipmentDispatched) {
        self.order_id = event.order_id.clone();
    }
}

/// Dispatches a shipment for each order placed (received from the broker
/// into the shipping log): shipment `s-<order>`, one per order, as the
/// command id comes from the event id.
#[derive(Debug, Default)]
pub struct Dispatch;

#[process_manager(name = "shipping.dispatch")]
impl Dispatch {
    #[event_handler]
    async fn placed(
        &self,
        event: &OrderPlaced,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let dispatch = DispatchShipment {
            order_id: envelope.aggregate_id.clone(),
            quantity: event.quantity,
        };
        context
            .execute(&format!("s-{}", envelope.aggregate_id), dispatch)
            .await?;
        Ok(())
    }
}
