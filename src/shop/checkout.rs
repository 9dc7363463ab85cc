//! [`Checkout`], the process manager that takes an order from placed to
//! confirmed or cancelled.

use cqrs_core::prelude::*;

use super::order::{CancelOrder, ConfirmOrder, Order, OrderPlaced};
use super::payment::{ChargeCard, PaymentCaptured, PaymentDeclined};
use super::stock::{ReleaseStock, ReserveStock, StockReserved, StockShortage};

/// Takes an order from placed to confirmed or cancelled.
#[derive(Debug, Default)]
pub struct Checkout;

#[process_manager(name = "shop.checkout")]
impl Checkout {
    #[event_handler]
    async fn placed(
        &self,
        event: &OrderPlaced,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let reserve = ReserveStock {
            order_id: envelope.aggregate_id.clone(),
            quantity: event.quantity,
        };
        context.execute(&event.sku, reserve).await?;
        Ok(())
    }

    #[event_handler]
    async fn reserved(
        &self,
        event: &StockReserved,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order: Order = context.load(&event.order_id).await?;
        let charge = ChargeCard {
            card: order.card,
            amount: order.total,
        };
        context.execute(&event.order_id, charge).await?;
        Ok(())
    }

    #[event_handler]
    async fn shortage(
        &self,
        event: &StockShortage,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let cancel = CancelOrder {
            reason: format!(
                "only {} in stock, {} ordered",
                event.available, event.requested
            ),
        };
        context.execute(&event.order_id, cancel).await?;
        Ok(())
    }

    #[event_handler]
    async fn captured(
        &self,
        _: &PaymentCaptured,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        context
            .execute(&envelope.aggregate_id, ConfirmOrder)
            .await?;
        Ok(())
    }

    /// The compensating step: give the stock back, then cancel.
    #[event_handler]
    async fn declined(
        &self,
        event: &PaymentDeclined,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = &envelope.aggregate_id;
        let order: Order = context.load(order_id).await?;
        let release = ReleaseStock {
            order_id: order_id.clone(),
        };
        context.execute(&order.sku, release).await?;
        let cancel = CancelOrder {
            reason: event.reason.clone(),
        };
        context.execute(order_id, cancel).await?;
        Ok(())
    }
}
