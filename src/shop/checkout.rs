//! [`Checkout`], the process manager that takes an order from placed to
//! confirmed or cancelled.

use cqrs_core::prelude::*;

use super::order::{CancelOrder, ConfirmOrder, Order, OrderCancelled, OrderError, OrderPlaced};
use super::payment::{ChargeCard, PaymentCaptured, PaymentDeclined, RefundPayment};
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

    /// Confirms the order; a payment that arrives after the order was
    /// cancelled (its payment window closed first) is refunded.
    #[event_handler]
    async fn captured(
        &self,
        _: &PaymentCaptured,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = &envelope.aggregate_id;
        match context.execute(order_id, ConfirmOrder).await {
            Err(CommandError::Domain(OrderError::Closed("cancelled"))) => {
                let refund = RefundPayment {
                    reason: "the order was cancelled before the payment arrived".into(),
                };
                context.execute(order_id, refund).await?;
            }
            confirmed => {
                confirmed?;
            }
        }
        Ok(())
    }

    /// The compensating step: cancel, which gives the stock back.
    #[event_handler]
    async fn declined(
        &self,
        event: &PaymentDeclined,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = &envelope.aggregate_id;
        let cancel = CancelOrder {
            reason: event.reason.clone(),
        };
        match context.execute(order_id, cancel).await {
            // Cancelled already: its payment window closed first.
            Err(CommandError::Domain(OrderError::Closed("cancelled"))) => Ok(()),
            cancelled => cancelled.map(drop).map_err(Into::into),
        }
    }

    /// An order cancelled for any reason gives back the stock it held
    /// (releasing stock an order never held does nothing): this is how an
    /// order whose payment window closed releases its stock.
    #[event_handler]
    async fn cancelled(
        &self,
        _: &OrderCancelled,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = &envelope.aggregate_id;
        let order: Order = context.load(order_id).await?;
        let release = ReleaseStock {
            order_id: order_id.clone(),
        };
        context.execute(&order.sku, release).await?;
        Ok(())
    }
}
